"""Schemathesis hooks of scripts/schemathesis.mjs.

A claim long-polls for up to its waitMs (30 s at most) when no task is ready, which in a run
against an empty server is nearly always: valid waits above 1 s are cut to 1 s, so that a
bounded run spends its time on many cases rather than on waiting (and no request outlasts the
client's timeout). Values outside the schema are left as they are: the server must refuse them.
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if case.operation.path == "/v1/worker/claim" and isinstance(body, dict):
        wait = body.get("waitMs")
        if isinstance(wait, int) and not isinstance(wait, bool) and 1000 < wait <= 30000:
            body["waitMs"] = 1000
