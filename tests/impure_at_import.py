"""Negative control for the sandbox probe: reads the clock at import, which a workflow must not."""

import datetime

LOADED_AT = datetime.datetime.now()
