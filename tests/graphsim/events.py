"""Calendar part of the simulated Graph API.

Routes (relative to /v1.0/users/{id} or /v1.0/me; `calendar/` prefix accepted):
  POST   events                      201 create, transactionId dedup      [G-EVPOST] [G-EV]
  GET    events                      list series masters and single events
  GET    events/{id}                 event / occurrence
  PATCH  events/{id}                 200, new changeKey/@odata.etag         [G-EVUPD]
  DELETE events/{id}                 204, organizer's delete mails attendees [G-EVDEL]
  POST   events/{id}/cancel          202, organizer only                    [G-EVCAN]
  GET    events/{id}/instances       occurrences in a window                [G-INST]
  GET    calendarView                events/occurrences in a window, paged
         https://learn.microsoft.com/en-us/graph/api/user-list-calendarview
  POST   calendar/getSchedule        free/busy                              [G-SCHED]
  GET    mailboxSettings[/timeZone]  the mailbox's own time zone, a Windows name;
         https://learn.microsoft.com/en-us/graph/api/user-get-mailboxsettings
         (MailboxSettings.Read): one setting comes as {"@odata.context", "value"}

Control: POST /_sim/mailboxsettings/{address} {"timeZone": "..."} sets a
mailbox's zone (not cleared by /_sim/reset, like other user settings); the
initial one is users[].time_zone in the config, else DEFAULT_MAILBOX_ZONE.

Times come back in UTC unless `Prefer: outlook.timezone="..."` [G-EVPOST];
zone names are Windows names or IANA ids (tzmap.py) [G-DTTZ].  All-day events
always come back at midnight, whatever the zone asked for [obs]
github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/471.  Every create /
update / cancel / delete of an event with attendees is recorded as an
"invitation" so tests can read what attendees would have been mailed
[G-EVPOST] [G-EVUPD] [G-EVDEL] [G-EVCAN].
"""

import base64
import datetime as _dt
import hashlib
import re
import secrets
import urllib.parse

import recurrence
import tzmap
from simcore import Reply, graph_error, immutable_id, iso_z, json_reply

UTC = _dt.timezone.utc
WRITE = ("Calendars.ReadWrite",)
READ = ("Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic")
SETTINGS_READ = ("MailboxSettings.Read", "MailboxSettings.ReadWrite")
DEFAULT_MAILBOX_ZONE = "W. Europe Standard Time"
DEFAULT_PAGE = 10
UPDATABLE = ("subject", "body", "location", "locations", "attendees", "importance",
             "sensitivity", "showAs", "categories", "reminderMinutesBeforeStart",
             "isReminderOn", "responseRequested", "allowNewTimeProposals", "hideAttendees",
             "isAllDay", "isOnlineMeeting", "onlineMeetingProvider")
TIME_FIELDS = ("start", "end", "location", "locations", "subject", "body", "recurrence",
               "isAllDay")
SHOW_AS_DIGIT = {"free": "0", "workingElsewhere": "0", "tentative": "1", "busy": "2",
                 "oof": "3"}  # availabilityView digits [G-SCHED] (graph-api.md §3.8)


class EventError(Exception):
    def __init__(self, reply):
        super().__init__(reply.status)
        self.reply = reply


def fail(req, status, code, message):
    return EventError(graph_error(status, code, message, req.request_id))


def validation_failure(req, detail=None):
    # Graph's generic answer for invalid event properties [obs]
    # github.com/microsoftgraph/microsoft-graph-docs/issues/7919; detail is ours.
    msg = "At least one property failed validation."
    return fail(req, 400, "ErrorPropertyValidationFailure",
                msg + (" (%s)" % detail if detail else ""))


# ---------------------------------------------------------------------------
# installation / routing

def install(graphapi, control):
    graphapi.register(__import__(__name__))
    control.EXTRA_ROUTES.append(("GET", "calendars", sim_get))
    control.EXTRA_ROUTES.append(("POST", "calendars", sim_post))
    control.EXTRA_ROUTES.append(("PATCH", "calendars", sim_patch))
    control.EXTRA_ROUTES.append(("DELETE", "calendars", sim_delete))
    control.EXTRA_ROUTES.append(("POST", "mailboxsettings", sim_mailbox_settings))


def match(method, rest):
    low = [s.lower() for s in rest]
    if low[:1] == ["mailboxsettings"] and method == "GET":
        if low == ["mailboxsettings"]:
            return "getMailboxSettings", get_mailbox_settings, SETTINGS_READ
        if low == ["mailboxsettings", "timezone"]:
            return "getMailboxTimeZone", get_mailbox_time_zone, SETTINGS_READ
    if low[:1] == ["calendar"] and low[1:2] != ["getschedule"]:
        rest, low = rest[1:], low[1:]
    n = len(low)
    if low == ["calendar", "getschedule"] and method == "POST":
        return "getSchedule", get_schedule, READ
    if low == ["calendarview"] and method == "GET":
        return "calendarView", calendar_view, READ
    if low == ["events"]:
        if method == "POST":
            return "createEvent", wrap(create_event, rest), WRITE
        if method == "GET":
            return "listEvents", wrap(list_events, rest), READ
    if n == 2 and low[0] == "events":
        table = {"GET": ("getEvent", get_event, READ),
                 "PATCH": ("updateEvent", update_event, WRITE),
                 "DELETE": ("deleteEvent", delete_event, WRITE)}
        if method in table:
            name, fn, scopes = table[method]
            return name, wrap(fn, rest), scopes
    if n == 3 and low[0] == "events" and low[2] == "cancel" and method == "POST":
        return "cancelEvent", wrap(cancel_event, rest), WRITE
    if n == 3 and low[0] == "events" and low[2] == "instances" and method == "GET":
        return "instances", wrap(instances, rest), READ
    return None


def wrap(fn, rest):
    """Bind the (calendar/-stripped) path and turn EventError into replies."""
    def run(state, req, user, token, _rest):
        try:
            return fn(state, req, user, rest)
        except EventError as err:
            return err.reply
    return run


# ---------------------------------------------------------------------------
# time helpers

def parse_local(text):
    """Parse a Graph dateTime ("2019-03-15T09:00:00.0000000", maybe with Z/offset)."""
    m = re.match(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?"
                 r"(Z|[+-]\d{2}:?\d{2})?$", str(text or "").strip())
    if not m:
        return None, None
    base = m.group(1) + "T" + (m.group(2) or "00:00:00")
    if len(base) == 16:
        base += ":00"
    frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
    try:
        naive = _dt.datetime.fromisoformat(base + "." + frac)
    except ValueError:  # month 13, day 32, hour 25, year 0: not a time at all
        return None, None
    off = m.group(4)
    if off is None:
        return naive, None
    if off == "Z":
        return naive, UTC
    sign = 1 if off[0] == "+" else -1
    hh, mm = int(off[1:3]), int(off[-2:])
    return naive, _dt.timezone(sign * _dt.timedelta(hours=hh, minutes=mm))


def zone_or_fail(req, name):
    zone = tzmap.resolve(name)
    if zone is None:
        # [obs] github.com/microsoftgraph/microsoft-graph-docs/issues/4758
        raise fail(req, 400, "TimeZoneNotSupportedException", "A valid TimeZone value must "
                   "be specified. The following TimeZone value is not supported: '%s'."
                   % (name or ""))
    return zone


def invalid_date_time(req, text):
    # Graph's answer to an event dateTime that is no time, e.g. "+3h": 400
    # "The value '+3h' of parameter 'DateTime' is invalid." [obs]
    # github.com/mpalermiti/outlook-mcp/issues/74 (2026, code not shown);
    # the code is the one Outlook gives with the same sentence for
    # StartDateTime [obs] github.com/OfficeDev/Office-365-SDK-for-Java/issues/9,
    # [inferred] for event bodies.
    return fail(req, 400, "ErrorInvalidParameter",
                "The value '%s' of parameter 'DateTime' is invalid." % text)


def to_utc(req, dttz, what):
    """dateTimeTimeZone -> aware UTC datetime [G-DTTZ]."""
    if not isinstance(dttz, dict) or not dttz.get("dateTime"):
        raise validation_failure(req, "%s is required" % what)
    zone_name = dttz.get("timeZone") or "UTC"
    zone = zone_or_fail(req, zone_name)
    naive, off = parse_local(dttz["dateTime"])
    if naive is None:
        raise invalid_date_time(req, dttz["dateTime"])
    aware = naive.replace(tzinfo=off) if off else naive.replace(tzinfo=zone)
    try:
        return aware.astimezone(UTC), zone_name
    except OverflowError:  # 0001-01-01T00:00 east of UTC is before year 1
        raise invalid_date_time(req, dttz["dateTime"]) from None


def output_zone(req):
    """Zone from `Prefer: outlook.timezone="..."`, else UTC [G-EVPOST] [G-INST]."""
    for value in req.headers.get_all("Prefer") or []:
        m = re.search(r'outlook\.timezone\s*=\s*"([^"]*)"', value, re.I)
        if m:
            return m.group(1), zone_or_fail(req, m.group(1))
    return "UTC", UTC


def fmt_dt(aware, zone):
    return aware.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S.0000000")


def dttz(aware, zone_name, zone):
    return {"dateTime": fmt_dt(aware, zone), "timeZone": zone_name}


def parse_window(req, start_key="startDateTime", end_key="endDateTime"):
    q = req.query
    if not q.get(start_key) or not q.get(end_key):
        # Wording of Outlook's error for calendarView/instances without a window [unverified].
        raise fail(req, 400, "ErrorInvalidParameter", "This request requires a time window "
                   "specified by the query string parameters StartDateTime and EndDateTime.")
    out = []
    for key in (start_key, end_key):
        naive, off = parse_local(q[key])
        try:
            out.append(naive.replace(tzinfo=off or UTC).astimezone(UTC))  # naive = UTC [unverified]
        except (AttributeError, OverflowError):  # not a time, or before year 1 in UTC
            raise fail(req, 400, "ErrorInvalidParameter", "The parameter '%s' is invalid."
                       % key) from None
    return out[0], out[1]


def prefer_headers(req, zone_name):
    applied = []
    if zone_name != "UTC" or any("outlook.timezone" in v for v in
                                 req.headers.get_all("Prefer") or []):
        applied.append('outlook.timezone="%s"' % zone_name)
    if any("immutableid" in v.lower() for v in req.headers.get_all("Prefer") or []):
        applied.append('IdType="ImmutableId"')  # ids here are always immutable [G-IMM]
    return [("Preference-Applied", ",".join(applied))] if applied else []


# ---------------------------------------------------------------------------
# storage helpers

def calendar(state, address):
    return state.events.setdefault(address, {})


def new_change_key():
    return base64.b64encode(secrets.token_bytes(24)).decode()


def touch(ev):
    """Every edit gets a new changeKey and @odata.etag [G-EV]."""
    ck = new_change_key()
    ev["resource"]["changeKey"] = ck
    ev["resource"]["@odata.etag"] = 'W/"%s"' % ck
    ev["resource"]["lastModifiedDateTime"] = iso_z(frac=True)


def occurrence_id(master_id, original_start):
    digest = hashlib.sha256(("%s|%s" % (master_id, original_start.isoformat())).encode())
    return master_id[:20] + "OCC" + base64.urlsafe_b64encode(digest.digest()).decode()[:43]


def occurrence_uid(master_uid, original_start):
    # iCalUId differs for every occurrence [G-EV].
    return master_uid[:60] + hashlib.sha1(original_start.isoformat().encode()).hexdigest()[:20]


def lookup(state, req, user, eid):
    """Return (master_or_single, occurrence_key or None); 404 if unknown."""
    with state.lock:
        cal = calendar(state, user.address)
        if eid in cal:
            return cal[eid], None
        occ = state.occurrences.get(user.address, {}).get(eid)
        if occ and occ[0] in cal:
            master = cal[occ[0]]
            if occ[1] not in master["deleted"]:
                return master, occ[1]
    # [obs] graph-api.md §5 ErrorItemNotFound
    raise fail(req, 404, "ErrorItemNotFound", "The specified object was not found in the store.")


# ---------------------------------------------------------------------------
# rendering

def event_times(ev, start, end, zone_name, zone):
    """start and end as dateTimeTimeZone; an all-day event's are the midnights
    of its dates in its own zone, labelled with the zone asked for [obs]
    github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/471."""
    if not ev["resource"].get("isAllDay"):
        return dttz(start, zone_name, zone), dttz(end, zone_name, zone)
    own = tzmap.resolve(ev["start_tz"]) or UTC
    return tuple({"dateTime": t.astimezone(own).strftime("%Y-%m-%dT00:00:00.0000000"),
                  "timeZone": zone_name} for t in (start, end))


def render_master(ev, zone_name, zone):
    res = dict(ev["resource"])
    res["start"], res["end"] = event_times(ev, ev["start"], ev["end"], zone_name, zone)
    return res


def expand(ev, until):
    """Occurrences (key, start, end, resource) of a series master up to `until` (UTC)."""
    rec = ev["resource"]["recurrence"]
    rzone = tzmap.resolve(rec["range"].get("recurrenceTimeZone") or ev["start_tz"]) or UTC
    local_start = ev["start"].astimezone(rzone)
    duration = ev["end"] - ev["start"]
    out = []
    for d in recurrence.occurrence_dates(rec, (until + _dt.timedelta(days=2)).date()):
        naive = _dt.datetime.combine(d, local_start.time().replace(tzinfo=None))
        start = naive.replace(tzinfo=rzone).astimezone(UTC)
        key = start.isoformat()
        if key in ev["deleted"]:
            continue
        out.append((key, start, start + duration))
    return out


def render_occurrence(ev, key, start, end, zone_name, zone):
    exc = ev["exceptions"].get(key)
    res = dict(ev["resource"])
    res.update({"id": occurrence_id(ev["id"], _dt.datetime.fromisoformat(key)),
                "type": "occurrence", "seriesMasterId": ev["id"], "recurrence": None,
                "iCalUId": occurrence_uid(ev["resource"]["iCalUId"],
                                          _dt.datetime.fromisoformat(key)),
                "originalStart": _dt.datetime.fromisoformat(key).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")})
    res.pop("transactionId", None)
    if exc:
        res.update(exc["overrides"])
        res["type"] = "exception"
        res["changeKey"] = exc["changeKey"]
        res["@odata.etag"] = 'W/"%s"' % exc["changeKey"]
        start, end = exc["start"], exc["end"]
    res["start"], res["end"] = event_times(ev, start, end, zone_name, zone)
    return res, start, end


def register_occurrences(state, address, ev, keys):
    with state.lock:
        table = state.occurrences.setdefault(address, {})
        for key in keys:
            table[occurrence_id(ev["id"], _dt.datetime.fromisoformat(key))] = (ev["id"], key)


def window_items(state, user, w_start, w_end, zone_name, zone, master_only=None):
    """All single events and occurrences overlapping [w_start, w_end), sorted."""
    items = []
    with state.lock:
        evs = list(calendar(state, user.address).values())
    for ev in evs:
        if master_only and ev["id"] != master_only:
            continue
        if ev["resource"]["type"] == "seriesMaster":
            occs = expand(ev, w_end)
            register_occurrences(state, user.address, ev, [o[0] for o in occs])
            for key, s, e in occs:
                res, s2, e2 = render_occurrence(ev, key, s, e, zone_name, zone)
                if s2 < w_end and e2 > w_start:
                    items.append((s2, res))
        elif not master_only and ev["start"] < w_end and ev["end"] > w_start:
            items.append((ev["start"], render_master(ev, zone_name, zone)))
    items.sort(key=lambda t: t[0])
    return items


# ---------------------------------------------------------------------------
# invitations

def record_invitation(state, organizer, ev, kind, to, occurrence=None, comment=None):
    """What Exchange would mail: request / update / cancel [G-EVPOST] [G-EVUPD] [G-EVCAN]."""
    if not to:
        return
    with state.lock:
        state.invitations.setdefault(organizer, []).append({
            "kind": kind, "event_id": ev["id"], "occurrence": occurrence,
            "iCalUId": ev["resource"]["iCalUId"], "subject": ev["resource"].get("subject"),
            "to": sorted(to), "comment": comment, "time": iso_z(frac=True),
            "changeKey": ev["resource"]["changeKey"],
        })


def attendee_addresses(attendees):
    return {((a or {}).get("emailAddress") or {}).get("address", "").lower()
            for a in attendees or [] if ((a or {}).get("emailAddress") or {}).get("address")}


def normalise_attendees(attendees, previous=None):
    prev = {((a.get("emailAddress") or {}).get("address") or "").lower(): a
            for a in previous or []}
    out = []
    for a in attendees or []:
        addr = ((a or {}).get("emailAddress") or {}).get("address", "")
        old = prev.get(addr.lower())
        status = old["status"] if old else {"response": "none",
                                            "time": "0001-01-01T00:00:00Z"}
        out.append({"type": a.get("type", "required"), "status": status,
                    "emailAddress": {"name": (a.get("emailAddress") or {}).get("name") or addr,
                                     "address": addr}})
    return out


# ---------------------------------------------------------------------------
# create

def teams_meeting():
    """onlineMeeting block for teamsForBusiness events [G-OLM]."""
    thread = secrets.token_hex(16)
    return {"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_" + thread +
            "%40thread.v2/0?context=%7b%22Tid%22%3a%22sim%22%7d",
            "conferenceId": str(secrets.randbelow(10 ** 9)).zfill(9),
            "tollNumber": "+1 555-0100"}


def apply_online_meeting(res):
    if res.get("isOnlineMeeting") and res.get("onlineMeeting") is None:
        res["onlineMeetingProvider"] = res.get("onlineMeetingProvider") or "teamsForBusiness"
        if res["onlineMeetingProvider"] == "teamsForBusiness":
            res["onlineMeeting"] = teams_meeting()
            body = res.get("body") or {"contentType": "html", "content": ""}
            if body.get("contentType", "").lower() == "html":
                body["content"] = (body.get("content") or "") + (
                    '<div class="me-email-text"><a href="%s">Join the meeting now</a></div>'
                    % res["onlineMeeting"]["joinUrl"])
            res["body"] = body


def check_times(req, start, end, is_all_day):
    if end < start:
        # EWS/Outlook code for end before start [unverified].
        raise fail(req, 400, "ErrorCalendarEndDateIsEarlierThanStartDate",
                   "The end date occurs before the start date.")


def build_event(req, user, body, organizer=None):
    start, start_tz = to_utc(req, body.get("start"), "start")
    end, end_tz = to_utc(req, body.get("end"), "end")
    check_times(req, start, end, body.get("isAllDay"))
    rec = body.get("recurrence")
    if rec:
        local_date = start.astimezone(zone_or_fail(req, start_tz)).date()
        err = recurrence.validate(rec, local_date)
        if err:
            raise validation_failure(req, err)
    now = iso_z(frac=True)
    eid = immutable_id()
    org = organizer or {"emailAddress": {"name": user.display_name, "address": user.address}}
    is_org = org["emailAddress"]["address"].lower() == user.address
    res = {
        "id": eid, "createdDateTime": now, "lastModifiedDateTime": now, "changeKey": "",
        "categories": body.get("categories", []), "originalStartTimeZone": start_tz,
        "originalEndTimeZone": end_tz,
        "iCalUId": "040000008200E00074C5B7101A82E008" + secrets.token_hex(28).upper(),
        "reminderMinutesBeforeStart": body.get("reminderMinutesBeforeStart", 15),
        "isReminderOn": body.get("isReminderOn", True), "hasAttachments": False,
        "subject": body.get("subject", ""), "bodyPreview": "",
        "importance": body.get("importance", "normal"),
        "sensitivity": body.get("sensitivity", "normal"),
        "isAllDay": bool(body.get("isAllDay", False)), "isCancelled": False,
        "isOrganizer": is_org, "responseRequested": body.get("responseRequested", True),
        "seriesMasterId": None, "showAs": body.get("showAs", "busy"),
        "type": "seriesMaster" if rec else "singleInstance",
        "webLink": "https://outlook.office365.com/owa/?itemid=%s&exvsurl=1&path=/calendar/item"
                   % urllib.parse.quote(eid),
        "onlineMeetingUrl": None, "isOnlineMeeting": bool(body.get("isOnlineMeeting", False)),
        "onlineMeetingProvider": body.get("onlineMeetingProvider", "unknown"),
        "allowNewTimeProposals": body.get("allowNewTimeProposals", True),
        "isDraft": False, "hideAttendees": body.get("hideAttendees", False),
        "responseStatus": {"response": "organizer" if is_org else "notResponded",
                           "time": "0001-01-01T00:00:00Z"},
        "body": body.get("body") or {"contentType": "html", "content": ""},
        "location": body.get("location") or {"displayName": "", "locationType": "default",
                                             "uniqueIdType": "unknown", "address": {},
                                             "coordinates": {}},
        "locations": body.get("locations", []), "recurrence": rec or None,
        "attendees": normalise_attendees(body.get("attendees")),
        "organizer": org, "onlineMeeting": None,
    }
    if res["onlineMeetingProvider"] == "unknown" and res["isOnlineMeeting"]:
        res["onlineMeetingProvider"] = "teamsForBusiness"
    if "transactionId" in body:
        res["transactionId"] = body["transactionId"]  # returned only if set [G-EV]
    apply_online_meeting(res)
    res["bodyPreview"] = re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ",
                                                    res["body"].get("content") or "")).strip()[:255]
    ev = {"id": eid, "start": start, "end": end, "start_tz": start_tz, "end_tz": end_tz,
          "resource": res, "exceptions": {}, "deleted": set()}
    touch(ev)
    return ev


def create_event(state, req, user, rest):
    body = req.json()
    if not isinstance(body, dict):
        raise fail(req, 400, "BadRequest", "Unable to read JSON request payload. Please ensure "
                   "Content-Type header is set and payload is of valid JSON format.")
    zone_name, zone = output_zone(req)
    txn = body.get("transactionId")
    if txn:
        with state.lock:
            existing = state.transactions.get((user.address, txn))
            ev = calendar(state, user.address).get(existing) if existing else None
        if ev is not None:
            # Duplicate transactionId: hand back the original event ([unverified]
            # what Graph returns, graph-api.md §3.6); no new invitations.
            return json_reply(201, render_master(ev, zone_name, zone), prefer_headers(req, zone_name))
    ev = build_event(req, user, body)
    with state.lock:
        calendar(state, user.address)[ev["id"]] = ev
        if txn:
            state.transactions[(user.address, txn)] = ev["id"]
    # Creating an event with attendees sends them invitations [G-EVPOST].
    record_invitation(state, user.address, ev, "request",
                      attendee_addresses(ev["resource"]["attendees"]))
    headers = prefer_headers(req, zone_name)
    headers.append(("Location", "%s/v1.0/users('%s')/events('%s')"
                    % (req.base_url, user.id, ev["id"])))
    return json_reply(201, render_master(ev, zone_name, zone), headers)


# ---------------------------------------------------------------------------
# read

def list_events(state, req, user, rest):
    zone_name, zone = output_zone(req)
    with state.lock:
        evs = sorted(calendar(state, user.address).values(), key=lambda e: e["start"])
    items = [render_master(ev, zone_name, zone) for ev in evs]
    return paged(req, items, prefer_headers(req, zone_name))


def get_event(state, req, user, rest):
    zone_name, zone = output_zone(req)
    ev, key = lookup(state, req, user, rest[1])
    if key is None:
        return json_reply(200, render_master(ev, zone_name, zone), prefer_headers(req, zone_name))
    orig = _dt.datetime.fromisoformat(key)
    res, _, _ = render_occurrence(ev, key, orig, orig + (ev["end"] - ev["start"]),
                                  zone_name, zone)
    return json_reply(200, res, prefer_headers(req, zone_name))


def page_size(req):
    for value in req.headers.get_all("Prefer") or []:
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", value, re.I)
        if m:
            return max(1, int(m.group(1)))
    try:
        return max(1, int(req.query.get("$top", DEFAULT_PAGE)))
    except ValueError:
        return DEFAULT_PAGE


def paged(req, items, headers):
    """Page with an opaque $skiptoken in @odata.nextLink (reuse it verbatim)."""
    size = page_size(req)
    token = req.query.get("$skiptoken")
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except ValueError:
        offset = 0
    body = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#events",
            "value": items[offset:offset + size]}
    if offset + size < len(items):
        params = {k: v for k, v in req.query.items() if k != "$skiptoken"}
        params["$skiptoken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        body["@odata.nextLink"] = "%s%s?%s" % (req.base_url, req.path,
                                                urllib.parse.urlencode(params))
    return json_reply(200, body, headers)


def calendar_view(state, req, user, token, rest):
    try:
        zone_name, zone = output_zone(req)
        w_start, w_end = parse_window(req)
        items = [res for _, res in window_items(state, user, w_start, w_end, zone_name, zone)]
        return paged(req, items, prefer_headers(req, zone_name))
    except EventError as err:
        return err.reply


def instances(state, req, user, rest):
    zone_name, zone = output_zone(req)
    w_start, w_end = parse_window(req)
    ev, key = lookup(state, req, user, rest[1])
    if key is not None or ev["resource"]["type"] != "seriesMaster":
        return paged(req, [], prefer_headers(req, zone_name))
    items = [res for _, res in window_items(state, user, w_start, w_end, zone_name, zone,
                                            master_only=ev["id"])]
    return paged(req, items, prefer_headers(req, zone_name))


# ---------------------------------------------------------------------------
# update

def check_if_match(req, etag):
    want = req.headers.get("If-Match")
    if want and want != "*" and want != etag:
        # Stale change key [unverified] (EWS ErrorIrresolvableConflict surfaced by Graph).
        raise fail(req, 412, "ErrorIrresolvableConflict", "The send or update operation could "
                   "not be performed because the change key passed in the request does not "
                   "match the current change key for the item.")


def update_event(state, req, user, rest):
    body = req.json()
    if not isinstance(body, dict):
        raise fail(req, 400, "BadRequest", "Unable to read JSON request payload.")
    ev, key = lookup(state, req, user, rest[1])
    zone_name, zone = output_zone(req)
    if key is not None:
        res = update_occurrence(state, req, user, ev, key, body, zone_name, zone)
        return json_reply(200, res, prefer_headers(req, zone_name))
    check_if_match(req, ev["resource"]["@odata.etag"])
    apply_update(state, req, user, ev, body, send=True)
    return json_reply(200, render_master(ev, zone_name, zone), prefer_headers(req, zone_name))


def apply_update(state, req, user, ev, body, send):
    """PATCH semantics on a single event or series master [G-EVUPD]."""
    res = ev["resource"]
    before = attendee_addresses(res["attendees"])
    start, end = ev["start"], ev["end"]
    start_tz, end_tz = ev["start_tz"], ev["end_tz"]
    if "start" in body:
        start, start_tz = to_utc(req, body["start"], "start")
    if "end" in body:
        end, end_tz = to_utc(req, body["end"], "end")
    check_times(req, start, end, body.get("isAllDay", res["isAllDay"]))
    rec = body["recurrence"] if "recurrence" in body else res["recurrence"]
    if rec:
        err = recurrence.validate(rec, start.astimezone(zone_or_fail(req, start_tz)).date())
        if err:
            raise validation_failure(req, err)
    with state.lock:
        for field in UPDATABLE:
            if field not in body:
                continue
            if field == "attendees":
                res["attendees"] = normalise_attendees(body["attendees"], res["attendees"])
            elif field == "isOnlineMeeting" and res["isOnlineMeeting"]:
                continue  # can't be set back to false once enabled [G-OLM]
            else:
                res[field] = body[field]
        if "recurrence" in body:
            res["recurrence"] = body["recurrence"] or None
            res["type"] = "seriesMaster" if res["recurrence"] else "singleInstance"
            ev["exceptions"], ev["deleted"] = {}, set()  # a new pattern drops exceptions
        ev["start"], ev["end"], ev["start_tz"], ev["end_tz"] = start, end, start_tz, end_tz
        res["originalStartTimeZone"], res["originalEndTimeZone"] = start_tz, end_tz
        apply_online_meeting(res)
        touch(ev)
    if send and res["isOrganizer"]:
        after = attendee_addresses(res["attendees"])
        # Only added/removed attendees are mailed when only attendees change;
        # other changes update everyone [G-EVUPD].
        record_invitation(state, user.address, ev, "request", after - before)
        record_invitation(state, user.address, ev, "cancel", before - after)
        if any(f in body for f in TIME_FIELDS if f != "attendees"):
            record_invitation(state, user.address, ev, "update", after & before)


def update_occurrence(state, req, user, ev, key, body, zone_name, zone):
    """PATCH of one occurrence turns it into an exception [G-EVUPD] [G-INST]."""
    orig = _dt.datetime.fromisoformat(key)
    duration = ev["end"] - ev["start"]
    with state.lock:
        exc = ev["exceptions"].get(key) or {"start": orig, "end": orig + duration,
                                            "overrides": {}, "changeKey": ""}
    check_if_match(req, 'W/"%s"' % (exc["changeKey"] or ev["resource"]["changeKey"]))
    start, end = exc["start"], exc["end"]
    if "start" in body:
        start, _ = to_utc(req, body["start"], "start")
    if "end" in body:
        end, _ = to_utc(req, body["end"], "end")
    check_times(req, start, end, False)
    check_boundary(req, ev, key, start)
    with state.lock:
        for field in UPDATABLE:
            if field in body and field != "isOnlineMeeting":
                exc["overrides"][field] = (normalise_attendees(body[field],
                                                               ev["resource"]["attendees"])
                                           if field == "attendees" else body[field])
        exc["start"], exc["end"] = start, end
        exc["changeKey"] = new_change_key()
        ev["exceptions"][key] = exc
    record_invitation(state, user.address, ev, "update",
                      attendee_addresses(exc["overrides"].get("attendees",
                                                              ev["resource"]["attendees"])),
                      occurrence=occurrence_id(ev["id"], orig))
    res, _, _ = render_occurrence(ev, key, orig, orig + duration, zone_name, zone)
    return res


def check_boundary(req, ev, key, new_start):
    """Moving an occurrence onto/past a neighbour's day fails [G-EVUPD]."""
    rzone = tzmap.resolve(ev["start_tz"]) or UTC
    occs = [k for k, _, _ in expand(ev, new_start + _dt.timedelta(days=400))]
    if key not in occs:
        return
    i = occs.index(key)
    day = new_start.astimezone(rzone).date()
    prev_day = _dt.datetime.fromisoformat(occs[i - 1]).astimezone(rzone).date() if i else None
    next_day = (_dt.datetime.fromisoformat(occs[i + 1]).astimezone(rzone).date()
                if i + 1 < len(occs) else None)
    if (prev_day and day <= prev_day) or (next_day and day >= next_day):
        raise fail(req, 400, "ErrorOccurrenceCrossingBoundary", "An occurrence cannot overlap "
                   "or cross the boundary of an adjacent occurrence.")


# ---------------------------------------------------------------------------
# delete / cancel

def remove(state, user, ev, key, kind, comment, send):
    """Delete a single event, a series or one occurrence; mail attendees if organizer."""
    res = ev["resource"]
    occ = None
    with state.lock:
        if key is None:
            calendar(state, user.address).pop(ev["id"], None)
        else:
            ev["deleted"].add(key)
            ev["exceptions"].pop(key, None)
            occ = occurrence_id(ev["id"], _dt.datetime.fromisoformat(key))
    if send and res["isOrganizer"]:
        record_invitation(state, user.address, ev, kind,
                          attendee_addresses(res["attendees"]), occurrence=occ,
                          comment=comment)


def delete_event(state, req, user, rest):
    ev, key = lookup(state, req, user, rest[1])
    # Organizer's DELETE sends cancellations [G-EVDEL].
    remove(state, user, ev, key, "cancel", None, send=True)
    return Reply(204, b"")


def cancel_event(state, req, user, rest):
    ev, key = lookup(state, req, user, rest[1])
    if not ev["resource"]["isOrganizer"]:
        # Attendee calling cancel: 400 with this message [G-EVCAN]; code [unverified].
        raise fail(req, 400, "ErrorInvalidRequest", "Your request can't be completed. You "
                   "need to be an organizer to cancel a meeting.")
    body = req.json() if req.body else {}
    comment = (body or {}).get("comment")
    remove(state, user, ev, key, "cancel", comment, send=True)
    return Reply(202, b"")  # 202, no body [G-EVCAN]


# ---------------------------------------------------------------------------
# getSchedule

def get_schedule(state, req, user, token, rest):
    try:
        return schedule(state, req)
    except EventError as err:
        return err.reply


def schedule(state, req):
    body = req.json()
    if not isinstance(body, dict):
        raise fail(req, 400, "BadRequest", "Unable to read JSON request payload.")
    schedules = body.get("schedules") or []
    if not schedules or len(schedules) > 20:
        # At most 20 entities [G-SCHED]; code/message [unverified].
        raise fail(req, 400, "ErrorInvalidParameter", "The number of schedules must be "
                   "between 1 and 20.")
    start, _ = to_utc(req, body.get("startTime"), "startTime")
    end, _ = to_utc(req, body.get("endTime"), "endTime")
    if end <= start or end - start >= _dt.timedelta(days=62):
        # Window must be shorter than 62 days [G-SCHED]; code [unverified].
        raise fail(req, 400, "ErrorInvalidParameter", "The time window must be less than "
                   "62 days and end after start.")
    interval = int(body.get("availabilityViewInterval") or 30)
    if not 5 <= interval <= 1440:
        raise fail(req, 400, "ErrorInvalidParameter", "availabilityViewInterval must be "
                   "between 5 and 1440.")
    zone_name, zone = output_zone(req)
    out = [one_schedule(state, addr, start, end, interval, zone_name, zone)
           for addr in schedules]
    return json_reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#"
                            "Collection(microsoft.graph.scheduleInformation)", "value": out},
                      prefer_headers(req, zone_name))


def one_schedule(state, addr, start, end, interval, zone_name, zone):
    target = state.find_user(addr)
    if target is None or not target.mailbox:
        # Unknown address -> entry carrying an error [G-SCHED]; responseCode [unverified].
        return {"scheduleId": addr, "availabilityView": "",
                "error": {"message": "The requested user '%s' is invalid." % addr,
                          "responseCode": "ErrorInvalidRecipients"}}
    items = []
    for _, res in window_items(state, target, start, end, "UTC", UTC):
        if res.get("isCancelled"):
            continue
        s = _dt.datetime.fromisoformat(res["start"]["dateTime"][:19]).replace(tzinfo=UTC)
        e = _dt.datetime.fromisoformat(res["end"]["dateTime"][:19]).replace(tzinfo=UTC)
        items.append((s, e, res))
    view = []
    slot = start
    step = _dt.timedelta(minutes=interval)
    while slot < end:
        digit = "0"
        for s, e, res in items:
            if s < slot + step and e > slot:
                digit = max(digit, SHOW_AS_DIGIT.get(res.get("showAs", "busy"), "2"))
        view.append(digit)
        slot += step
    return {"scheduleId": addr, "availabilityView": "".join(view),
            "scheduleItems": [{"isPrivate": res.get("sensitivity") == "private",
                               "status": res.get("showAs", "busy"),
                               "subject": res.get("subject"),
                               "location": (res.get("location") or {}).get("displayName", ""),
                               "start": dttz(s, zone_name, zone),
                               "end": dttz(e, zone_name, zone)} for s, e, res in items],
            "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday",
                                            "friday"],
                             "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                             "timeZone": {"name": "UTC"}}}


# ---------------------------------------------------------------------------
# mailbox settings

def mailbox_time_zone(state, user):
    with state.lock:
        zone = getattr(user, "mailbox_time_zone", None)
        if zone is None:
            spec = next((u for u in state.config.users
                         if u["address"].lower() == user.address), {})
            zone = spec.get("time_zone", DEFAULT_MAILBOX_ZONE)
    return zone


def get_mailbox_settings(state, req, user, token, rest):
    """GET mailboxSettings: the settings the agent could use, shortened."""
    return json_reply(200, {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('%s')/"
                          "mailboxSettings" % user.id,
        "timeZone": mailbox_time_zone(state, user),
        "language": {"locale": "en-US", "displayName": "English (United States)"},
        "dateFormat": "MM/dd/yyyy", "timeFormat": "hh:mm tt"})


def get_mailbox_time_zone(state, req, user, token, rest):
    """GET mailboxSettings/timeZone: one setting, as "value"."""
    return json_reply(200, {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('%s')/"
                          "mailboxSettings/timeZone" % user.id,
        "value": mailbox_time_zone(state, user)})


def sim_mailbox_settings(state, req, segs, body):
    """POST /_sim/mailboxsettings/{address} {"timeZone": "Tokyo Standard Time"}."""
    user = state.find_user(segs[1]) if len(segs) == 2 else None
    if user is None:
        return json_reply(404, {"error": "POST /_sim/mailboxsettings/{address}"})
    zone = body.get("timeZone")
    if not isinstance(zone, str) or not zone:
        return json_reply(400, {"error": "timeZone must be a zone name"})
    with state.lock:
        user.mailbox_time_zone = zone
    return json_reply(200, {"address": user.address, "timeZone": zone})


# ---------------------------------------------------------------------------
# control API: /_sim/calendars/{address}/...

def sim_user(state, segs):
    if len(segs) < 3:
        return None
    return state.find_user(segs[1])


class _SimReq:
    """Minimal request stand-in for control-API calls into the event code."""

    def __init__(self, req, body):
        self.headers, self.query, self.request_id = req.headers, {}, req.request_id
        self.body, self._json, self.base_url, self.path = b"", body, req.base_url, req.path

    def json(self):
        return self._json


def sim_view(ev):
    res = render_master(ev, "UTC", UTC)
    res["_exceptions"] = {k: {"start": iso_z(x["start"]), "end": iso_z(x["end"]),
                              "overrides": x["overrides"]} for k, x in ev["exceptions"].items()}
    res["_deleted_occurrences"] = sorted(ev["deleted"])
    return res


def sim_get(state, req, segs, body):
    user = sim_user(state, segs)
    if user is None:
        return json_reply(404, {"error": "GET /_sim/calendars/{address}/events|invitations"})
    if segs[2] == "events":
        with state.lock:
            evs = list(calendar(state, user.address).values())
        return json_reply(200, {"events": [sim_view(e) for e in evs]})
    if segs[2] == "invitations":
        with state.lock:
            return json_reply(200, {"invitations": list(state.invitations.get(user.address,
                                                                              []))})
    return json_reply(404, {"error": "unknown calendar view"})


def sim_post(state, req, segs, body):
    """POST /_sim/calendars/{addr}/events  {event..., "organizer": {...}} inserts an
    event as if it arrived (no invitations); .../events/{id}/respond
    {"attendee": addr, "response": "accepted"} records an attendee's answer."""
    user = sim_user(state, segs)
    if user is None or segs[2] != "events":
        return json_reply(404, {"error": "unknown calendar route"})
    sreq = _SimReq(req, body)
    try:
        if len(segs) == 3:
            ev = build_event(sreq, user, body, organizer=body.get("organizer"))
            with state.lock:
                calendar(state, user.address)[ev["id"]] = ev
            return json_reply(201, render_master(ev, "UTC", UTC))
        if len(segs) == 5 and segs[4] == "respond":
            ev, key = lookup(state, sreq, user, segs[3])
            return respond(state, ev, body)
    except EventError as err:
        return err.reply
    return json_reply(404, {"error": "unknown calendar route"})


def respond(state, ev, body):
    who = str(body.get("attendee", "")).lower()
    with state.lock:
        for a in ev["resource"]["attendees"]:
            if a["emailAddress"]["address"].lower() == who:
                a["status"] = {"response": body.get("response", "accepted"),
                               "time": iso_z(frac=True)}
                touch(ev)
                return json_reply(200, sim_view(ev))
    return json_reply(404, {"error": "no such attendee"})


def sim_patch(state, req, segs, body):
    """Edit an event as Outlook would: new changeKey; invitations only if
    "_send_updates" is true."""
    user = sim_user(state, segs)
    if user is None or len(segs) != 4 or segs[2] != "events":
        return json_reply(404, {"error": "PATCH /_sim/calendars/{address}/events/{id}"})
    sreq = _SimReq(req, body)
    try:
        ev, key = lookup(state, sreq, user, segs[3])
        send = bool(body.pop("_send_updates", False))
        if key is None:
            apply_update(state, sreq, user, ev, body, send=send)
            return json_reply(200, sim_view(ev))
        return json_reply(200, update_occurrence(state, sreq, user, ev, key, body, "UTC", UTC))
    except EventError as err:
        return err.reply


def sim_delete(state, req, segs, body):
    """Delete an event as the user would in Outlook (no invitations recorded)."""
    user = sim_user(state, segs)
    if user is None or len(segs) != 4 or segs[2] != "events":
        return json_reply(404, {"error": "DELETE /_sim/calendars/{address}/events/{id}"})
    try:
        ev, key = lookup(state, _SimReq(req, body), user, segs[3])
    except EventError as err:
        return err.reply
    remove(state, user, ev, key, "cancel", None, send=False)
    return json_reply(200, {"deleted": segs[3]})
