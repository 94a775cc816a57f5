"""The onboarding KPIs: frames loaded in one pass, then pure functions over pandas frames.

`frames.load_frames` runs one `pandas.read_sql` per table, whatever the number of clients.
Everything else here is a pure function of those frames, a business calendar and a period
`[start, end)`, so each KPI can be tested on a small frame built by hand. Durations are in
business days (business time divided by the length of one business day), as the playbook counts
them. One module per family of KPIs (speed, completeness, communication, quality, founder,
blockers); `table` puts them together for any period and scope; `triggers` reads the weekly
series for thresholds broken and capacity signals.
"""
