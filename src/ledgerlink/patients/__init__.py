"""Patients: importing them from a PMS patient export, and their PMS account numbers."""
