"""The servers a sweep talks to: how each kind is started, addressed and spoken to.

Why a package: everything that knows a backend (the wire formats, the HTTP client, the
processes we start, what a server reports about itself) sits here, below the planning and
the running, so a new kind of server is a change here and a config file, nothing above.
"""
