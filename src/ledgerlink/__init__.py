"""ledgerlink: write processed payments back into practice-management ledgers, exactly once."""

__version__ = "0.1.0"
