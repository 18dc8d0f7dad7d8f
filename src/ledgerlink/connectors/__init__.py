"""PMS connectors: one small interface (`base.PmsConnector`), one implementation per PMS."""
