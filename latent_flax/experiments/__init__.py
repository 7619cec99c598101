"""Experiments across runs: sweeps of config overrides (sweep), scheduler launchers (launch)
and the reports and plots that compare runs (report)."""
