"""Won deals become onboardings: webhook verification, event reading, mapping, CRM API, polling."""
