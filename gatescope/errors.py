"""Errors that gatescope reports to its users.

Every problem with a user's input (a file, a name, a shape) is raised as a
`GatescopeError`; the command line prints its message on one line and exits
non-zero, never a traceback.
"""


class GatescopeError(Exception):
    """A problem with the user's input, stated in one line."""
