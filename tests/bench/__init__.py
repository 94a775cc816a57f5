"""`make bench`: every measurement side by side with its floor, in one run, one file per subject.

Each module of this package that defines a module-level `PART` (`tests.bench.common.Part`) is a
subject; `python -m tests.bench` finds them, runs them in their `order` and composes one report.
A new subject is a new file here; nothing else changes.
"""
