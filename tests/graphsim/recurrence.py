"""patternedRecurrence validation and expansion for the simulator.

Pattern types and their properties [G-RPAT]; range types numbered / endDate /
noEnd; range.startDate must equal the date of the event's start, and the first
occurrence is the first date on/after startDate that fits the pattern [G-REC].
"""

import calendar as _cal
import datetime as _dt

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEXES = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}
PATTERNS = {
    "daily": ("interval",),
    "weekly": ("interval", "daysOfWeek"),
    "absoluteMonthly": ("interval", "dayOfMonth"),
    "relativeMonthly": ("interval", "daysOfWeek"),
    "absoluteYearly": ("interval", "dayOfMonth", "month"),
    "relativeYearly": ("interval", "daysOfWeek", "month"),
}
RANGES = {"numbered": ("startDate", "numberOfOccurrences"),
          "endDate": ("startDate", "endDate"), "noEnd": ("startDate",)}
MAX_OCCURRENCES = 5000  # safety cap for open-ended series


def parse_date(text):
    return _dt.date.fromisoformat(str(text)[:10])


def validate(rec, start_date):
    """Return an error text, or None when the recurrence is acceptable."""
    if not isinstance(rec, dict):
        return "recurrence must be an object"
    p, r = rec.get("pattern") or {}, rec.get("range") or {}
    ptype, rtype = p.get("type"), r.get("type")
    if ptype not in PATTERNS:
        return "unsupported pattern type %r" % ptype
    if rtype not in RANGES:
        return "unsupported range type %r" % rtype
    for prop in PATTERNS[ptype]:
        if p.get(prop) in (None, [], 0, ""):
            return "pattern.%s is required for %s" % (prop, ptype)
    for prop in RANGES[rtype]:
        if r.get(prop) in (None, "", 0):
            return "range.%s is required for %s" % (prop, rtype)
    # Values are checked even in properties the pattern ignores [G-REC].
    try:
        if int(p.get("interval") or 0) < 1:
            return "pattern.interval must be >= 1"
        if not 0 <= int(p.get("dayOfMonth") or 0) <= 31:
            return "pattern.dayOfMonth out of range"
        if not 0 <= int(p.get("month") or 0) <= 12:
            return "pattern.month out of range"
        if any(str(d).lower() not in DAYS for d in p.get("daysOfWeek") or []):
            return "pattern.daysOfWeek has an invalid day"
        if str(p.get("firstDayOfWeek") or "sunday").lower() not in DAYS:
            return "pattern.firstDayOfWeek invalid"
        if str(p.get("index") or "first").lower() not in INDEXES:
            return "pattern.index invalid"
        rstart = parse_date(r["startDate"])
        if rtype == "endDate" and parse_date(r["endDate"]) < rstart:
            return "range.endDate before range.startDate"
        if rtype == "numbered" and int(r["numberOfOccurrences"]) < 1:
            return "range.numberOfOccurrences must be > 0"
    except (TypeError, ValueError):
        return "malformed recurrence value"
    if rstart != start_date:
        # range.startDate must equal the start date of the event [G-REC] [G-RPAT].
        return "range.startDate %s does not match the event start date %s" % (
            rstart.isoformat(), start_date.isoformat())
    return None


def _week_start(d, first_dow):
    return d - _dt.timedelta(days=(d.weekday() - first_dow) % 7)


def _nth_weekday(year, month, days, index):
    """The index-th day in the month whose weekday is in days (relative patterns)."""
    last = _cal.monthrange(year, month)[1]
    hits = [_dt.date(year, month, n) for n in range(1, last + 1)
            if DAYS[_dt.date(year, month, n).weekday()] in days]
    if not hits:
        return None
    i = INDEXES[index]
    return hits[i] if i < len(hits) else hits[-1]


def _fits(p, start, d):
    ptype, interval = p["type"], int(p.get("interval") or 1)
    days = {str(x).lower() for x in p.get("daysOfWeek") or []}
    index = str(p.get("index") or "first").lower()
    if ptype == "daily":
        return (d - start).days % interval == 0
    if ptype == "weekly":
        fdow = DAYS.index(str(p.get("firstDayOfWeek") or "sunday").lower())
        weeks = (_week_start(d, fdow) - _week_start(start, fdow)).days // 7
        return weeks % interval == 0 and DAYS[d.weekday()] in days
    months = (d.year - start.year) * 12 + d.month - start.month
    if ptype in ("absoluteMonthly", "relativeMonthly"):
        if months % interval:
            return False
    else:
        if (d.year - start.year) % interval or d.month != int(p["month"]):
            return False
    if ptype in ("absoluteMonthly", "absoluteYearly"):
        # Day 31 in a shorter month falls on its last day [unverified].
        want = min(int(p["dayOfMonth"]), _cal.monthrange(d.year, d.month)[1])
        return d.day == want
    return d == _nth_weekday(d.year, d.month, days, index)


def occurrence_dates(rec, until):
    """Yield the occurrence dates of the series, in order, up to `until` (a date)."""
    p, r = rec["pattern"], rec["range"]
    start = parse_date(r["startDate"])
    end = parse_date(r["endDate"]) if r["type"] == "endDate" else None
    count = int(r["numberOfOccurrences"]) if r["type"] == "numbered" else None
    n, d = 0, start
    while n < MAX_OCCURRENCES and d <= until and (end is None or d <= end):
        if _fits(p, start, d):
            yield d
            n += 1
            if count is not None and n >= count:
                return
        d += _dt.timedelta(days=1)
