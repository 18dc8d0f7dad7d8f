"""Workers: instant and daily writeback, coordinated through the store alone."""
