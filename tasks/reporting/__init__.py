"""The review loop: KPIs (kpis/), the weekly review, monthly memo, quarterly reset and 30-day
audit (one module each, sharing shared.py and actions.py), their charts, and the Prefect tasks
the report flows run (steps.py)."""
