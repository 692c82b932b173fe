"""What a cell asks the server: a prompt, or an agent workflow over ingested data.

Why a package: a workload says what one trial sends and which rows it yields; the
measuring code above it does not know which workload it drives.
"""
