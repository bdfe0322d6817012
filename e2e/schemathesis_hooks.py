"""What schemathesis cannot know from JSON Schema alone: the named formats the document
explains in words (api/src/rules.rs). Loaded by e2e/tests/schemathesis.rs through
SCHEMATHESIS_HOOKS; a new user running schemathesis by hand passes the same:

    PYTHONPATH=e2e SCHEMATHESIS_HOOKS=schemathesis_hooks schemathesis run http://…/openapi.json
"""

import datetime

import schemathesis
from hypothesis import strategies as st

# `phone`: E.164 that libphonenumber accepts (a pattern cannot say which numbers exist).
schemathesis.openapi.format(
    "phone",
    st.sampled_from(
        ["+4930123456", "+14155552671", "+447911123456", "+33612345678", "+819012345678"]
    ),
)

# `time-zone`: an IANA zone name.
schemathesis.openapi.format(
    "time-zone",
    st.sampled_from(
        ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
    ),
)

# `send-at`: an RFC 3339 instant at most a year ahead (a past one means now).
_now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
schemathesis.openapi.format(
    "send-at",
    st.datetimes(
        min_value=datetime.datetime(2000, 1, 1),
        max_value=_now + datetime.timedelta(days=300),
    ).map(lambda d: d.replace(tzinfo=datetime.timezone.utc).isoformat()),
)
