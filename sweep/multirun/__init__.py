"""A Hydra multirun as a whole: its plan, preflight and dry run, rounds, launchers, directory and summary.

Why a package: these run once per multirun, around the jobs, and nothing in a job imports them.
"""
