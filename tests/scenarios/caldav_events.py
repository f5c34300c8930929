#!/usr/bin/python3
"""Interviews over CalDAV, end to end: curl and python3-caldav talk to the
agent's /dav/ endpoint, and what they write must appear in the simulated
Outlook calendar (and what Outlook changes must come back)."""

import datetime
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import caldav

from scenario import ALICE, BOB, CAROL, DAVE, AgentTestCase, main, sandbox

DAV = "{DAV:}"
CAL = "{urn:ietf:params:xml:ns:caldav}"
AUTH = "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)


def vevent(uid, summary="Interview", start="DTSTART;TZID=Europe/Berlin:"
           "20300304T090000", end="DTEND;TZID=Europe/Berlin:20300304T100000",
           extra=""):
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//scenario//EN",
             "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z", start,
             end, "SUMMARY:" + summary,
             "ATTENDEE;CN=Jordan Candidate;ROLE=REQ-PARTICIPANT:"
             "mailto:jordan@example.net"]
    lines += [x for x in extra.split("\n") if x]
    lines += ["END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())


class CalDAVEvents(AgentTestCase):

    # ---- helpers ----

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.box.http_port, path)

    def obj_path(self, name, address=ALICE):
        return "/dav/calendars/%s/default/%s" % (address, name)

    def curl(self, method, path, body=None, headers=(), auth=AUTH):
        """One request with curl; returns status, headers and body."""
        args = ["curl", "-s", "-S", "-i", "-X", method, "--max-time", "30"]
        if auth is not None:
            args += ["-u", auth]
        for h in headers:
            args += ["-H", h]
        if body is not None:
            args += ["--data-binary", "@-"]
        out = subprocess.run(args + [self.url(path)], capture_output=True,
                             input=(body or "").encode(), check=True)
        raw = out.stdout.decode("utf-8", "replace")
        head, _, rest = raw.partition("\r\n\r\n")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return Response(status, hdrs, rest)

    def put(self, name, text, *headers, address=ALICE):
        return self.curl("PUT", self.obj_path(name, address), text,
                         ("Content-Type: text/calendar; charset=utf-8",)
                         + headers)

    def events(self, address=ALICE):
        quoted = urllib.parse.quote(address)
        return self.box.sim_get("/_sim/calendars/%s/events" % quoted)["events"]

    def events_with(self, subject, address=ALICE):
        return [e for e in self.events(address) if e.get("subject") == subject]

    def unique(self, what):
        return "%s-%s" % (what, uuid.uuid4().hex[:12])

    def client(self):
        return caldav.DAVClient(
            url=self.url("/dav/calendars/%s/" % ALICE),
            username=sandbox.SERVICE_USER, password=sandbox.SERVICE_PASSWORD)

    # ---- discovery ----

    def test_options_and_well_known(self):
        r = self.curl("OPTIONS", "/dav/calendars/%s/default/" % ALICE)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("DAV"), "1, 3, calendar-access")
        allow = {m.strip() for m in r.header("Allow").split(",")}
        self.assertEqual(allow, {"OPTIONS", "PROPFIND", "REPORT"})
        # Each resource lists only the methods it implements.
        r = self.curl("OPTIONS", self.obj_path("any.ics"))
        allow = {m.strip() for m in r.header("Allow").split(",")}
        self.assertEqual(allow, {"OPTIONS", "GET", "HEAD", "PUT", "DELETE",
                                 "PROPFIND"})
        r = self.curl("GET", "/.well-known/caldav")
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header("Location"), "/dav/")

    def test_authentication_required(self):
        r = self.curl("PROPFIND", "/dav/calendars/%s/" % ALICE, auth=None)
        self.assertEqual(r.status, 401)
        self.assertIn('Basic realm="nextal"', r.header("WWW-Authenticate"))
        r = self.curl("PROPFIND", "/dav/calendars/%s/" % ALICE,
                      auth=sandbox.SERVICE_USER + ":wrong")
        self.assertEqual(r.status, 401)

    def test_propfind_discovery(self):
        body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:" '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>'
                '<D:current-user-principal/><C:calendar-home-set/>'
                '<D:resourcetype/><C:supported-calendar-component-set/>'
                '<D:supported-report-set/><D:no-such-property/>'
                '</D:prop></D:propfind>')
        r = self.curl("PROPFIND", "/dav/principals/%s/" % ALICE, body,
                      ["Depth: 0"])
        self.assertEqual(r.status, 207)
        doc = ET.fromstring(r.body)
        self.assertEqual(
            doc.find(".//%scurrent-user-principal/%shref" % (DAV, DAV)).text,
            "/dav/principals/%s/" % ALICE)
        self.assertEqual(
            doc.find(".//%scalendar-home-set/%shref" % (CAL, DAV)).text,
            "/dav/calendars/%s/" % ALICE)
        r = self.curl("PROPFIND", "/dav/calendars/%s/" % ALICE, body,
                      ["Depth: 1"])
        doc = ET.fromstring(r.body)
        hrefs = [x.text for x in doc.findall("%sresponse/%shref" % (DAV, DAV))]
        self.assertEqual(hrefs, ["/dav/calendars/%s/" % ALICE,
                                 "/dav/calendars/%s/default/" % ALICE])
        cal = doc.findall("%sresponse" % DAV)[1]
        self.assertIsNotNone(cal.find(".//%sresourcetype/%scalendar"
                                      % (DAV, CAL)))
        comps = [c.get("name") for c in cal.findall(
            ".//%ssupported-calendar-component-set/%scomp" % (CAL, CAL))]
        self.assertEqual(comps, ["VEVENT"])
        reports = {x.tag for x in cal.findall(
            ".//%ssupported-report/%sreport/*" % (DAV, DAV))}
        self.assertEqual(reports, {CAL + "calendar-multiget",
                                   CAL + "calendar-query",
                                   CAL + "free-busy-query"})
        # An unknown property is reported missing, not invented.
        missing = [ps for ps in cal.findall("%spropstat" % DAV)
                   if ps.find("%sprop/%sno-such-property" % (DAV, DAV))
                   is not None]
        self.assertEqual(len(missing), 1)
        self.assertIn("404", missing[0].find("%sstatus" % DAV).text)

    def test_propfind_infinity_refused(self):
        """RFC 4918 9.1: Depth: infinity is refused with 403 and the
        propfind-finite-depth precondition, never answered as depth 1."""
        body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                '<D:resourcetype/><D:getetag/></D:prop></D:propfind>')
        for path in ("/dav/calendars/%s/" % ALICE,
                     "/dav/calendars/%s/default/" % ALICE):
            for depth in ("infinity", "Infinity"):
                r = self.curl("PROPFIND", path, body, ["Depth: " + depth])
                self.assertEqual(r.status, 403, r.body)
                self.assertTrue(
                    r.header("Content-Type").startswith("application/xml"))
                doc = ET.fromstring(r.body)
                self.assertEqual(doc.tag, DAV + "error")
                self.assertIsNotNone(doc.find(DAV + "propfind-finite-depth"),
                                     r.body)
                self.assertNotIn("multistatus", r.body)
        # Depth 1 still lists the calendar's members.
        r = self.curl("PROPFIND", "/dav/calendars/%s/" % ALICE, body,
                      ["Depth: 1"])
        self.assertEqual(r.status, 207, r.body)

    # ---- create, read, update, delete with curl ----

    def test_curl_lifecycle_with_etags(self):
        uid = self.unique("lifecycle") + "@nextal.example"
        name = uid + ".ics"
        subject = self.unique("Interview")
        r = self.put(name, vevent(uid, subject), "If-None-Match: *")
        self.assertEqual(r.status, 201)
        etag1 = r.header("ETag")
        self.assertTrue(etag1.startswith('"'))
        [ev] = self.events_with(subject)
        self.assertEqual(ev["start"]["timeZone"], "UTC")
        self.assertEqual(ev["start"]["dateTime"][:16], "2030-03-04T08:00")
        self.assertEqual(ev["originalStartTimeZone"], "W. Europe Standard Time")
        self.assertEqual([a["emailAddress"]["address"] for a in ev["attendees"]],
                         ["jordan@example.net"])

        # The same create again must not overwrite.
        r = self.put(name, vevent(uid, subject), "If-None-Match: *")
        self.assertEqual(r.status, 412)

        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("Content-Type").startswith("text/calendar"))
        self.assertEqual(r.header("ETag"), etag1)
        self.assertIn("UID:" + uid, r.body)
        self.assertIn("SUMMARY:" + subject, r.body)
        self.assertIn("DTSTART;TZID=Europe/Berlin:20300304T090000", r.body)

        # Update with a wrong ETag: refused, nothing changes.
        moved = self.unique("Moved")
        r = self.put(name, vevent(uid, moved), 'If-Match: "not-the-etag"')
        self.assertEqual(r.status, 412)
        self.assertEqual(len(self.events_with(subject)), 1)
        self.assertEqual(self.events_with(moved), [])

        # Update with the right ETag.
        r = self.put(name, vevent(uid, moved), "If-Match: " + etag1)
        self.assertEqual(r.status, 204)
        etag2 = r.header("ETag")
        self.assertNotEqual(etag2, etag1)
        [ev2] = self.events_with(moved)
        self.assertEqual(ev2["id"], ev["id"])
        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.header("ETag"), etag2)
        self.assertIn("SUMMARY:" + moved, r.body)

        # Delete with a stale ETag, then the current one.
        r = self.curl("DELETE", self.obj_path(name), None,
                      ["If-Match: " + etag1])
        self.assertEqual(r.status, 412)
        self.assertEqual(len(self.events_with(moved)), 1)
        r = self.curl("DELETE", self.obj_path(name), None,
                      ["If-Match: " + etag2])
        self.assertEqual(r.status, 204)
        self.assertEqual(self.events_with(moved), [])
        self.assertEqual(self.curl("GET", self.obj_path(name)).status, 404)

    def test_outlook_edit_seen_by_next_get(self):
        uid = self.unique("outlook-edit")
        name = uid + ".ics"
        subject = self.unique("Interview")
        r = self.put(name, vevent(uid, subject), "If-None-Match: *")
        self.assertEqual(r.status, 201)
        etag1 = r.header("ETag")
        [ev] = self.events_with(subject)
        edited = self.unique("Edited in Outlook")
        self.sim_patch("/_sim/calendars/%s/events/%s" % (ALICE, ev["id"]),
                       {"subject": edited})
        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.status, 200)
        self.assertNotEqual(r.header("ETag"), etag1)
        self.assertIn("SUMMARY:" + edited, r.body)
        # A client still holding the old ETag must not overwrite the edit.
        r = self.put(name, vevent(uid, "Stale write"), "If-Match: " + etag1)
        self.assertEqual(r.status, 412)
        self.assertEqual(len(self.events_with(edited)), 1)

    def propfind_etags(self):
        """getctag of the calendar and getetag of each object, Depth 1."""
        body = ('<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org'
                '/ns/"><D:prop><D:getetag/><CS:getctag/></D:prop></D:propfind>')
        r = self.curl("PROPFIND", "/dav/calendars/%s/default/" % ALICE, body,
                      ["Depth: 1"])
        self.assertEqual(r.status, 207)
        doc = ET.fromstring(r.body)
        ctag = doc.find(".//{http://calendarserver.org/ns/}getctag").text
        etags = {}
        for resp in doc.findall(DAV + "response")[1:]:
            name = resp.find(DAV + "href").text.rsplit("/", 1)[1]
            etags[urllib.parse.unquote(name)] = resp.find(
                ".//%sgetetag" % DAV).text
        return ctag, etags

    def test_propfind_follows_outlook(self):
        names = []
        for _ in range(2):
            uid = self.unique("sync")
            r = self.put(uid + ".ics", vevent(uid, self.unique("Sync")),
                         "If-None-Match: *")
            self.assertEqual(r.status, 201)
            names.append((uid + ".ics", r.header("ETag")))
        ctag1, etags1 = self.propfind_etags()
        for name, etag in names:
            self.assertEqual(etags1[name], etag)
        ids = {e["subject"]: e["id"] for e in self.events()}
        edited_id = ids[self.get_subject(names[0][0])]
        deleted_id = ids[self.get_subject(names[1][0])]
        self.sim_patch("/_sim/calendars/%s/events/%s" % (ALICE, edited_id),
                       {"location": {"displayName": "Room 4"}})
        self.sim_request("DELETE", "/_sim/calendars/%s/events/%s"
                         % (ALICE, deleted_id))
        ctag2, etags2 = self.propfind_etags()
        self.assertNotEqual(ctag2, ctag1)
        self.assertNotEqual(etags2[names[0][0]], names[0][1])
        self.assertNotIn(names[1][0], etags2)
        # The new ETag is the one GET gives.
        r = self.curl("GET", self.obj_path(names[0][0]))
        self.assertEqual(r.header("ETag"), etags2[names[0][0]])
        self.assertIn("LOCATION:Room 4", r.body)

    def get_subject(self, name):
        r = self.curl("GET", self.obj_path(name))
        return re.search(r"^SUMMARY:(.*)\r$", r.body, re.M).group(1)

    def sim_patch(self, path, body):
        return self.sim_request("PATCH", path, body)

    def sim_request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.box.sim_url(path), data=data,
            headers={"Content-Type": "application/json"}, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def test_retried_put_creates_one_meeting(self):
        uid = self.unique("retried")
        name = uid + ".ics"
        subject = self.unique("Interview")
        # Graph creates the event but the answer is lost on the way back.
        self.box.sim_post("/_sim/faults", {
            "fault": "503", "mailbox": ALICE, "operation": "createEvent",
            "count": 1, "after": True})
        r = self.put(name, vevent(uid, subject), "If-None-Match: *")
        self.assertGreaterEqual(r.status, 500)
        self.assertEqual(len(self.events_with(subject)), 1)
        # The client retries: the same transactionId finds the same event.
        r = self.put(name, vevent(uid, subject), "If-None-Match: *")
        self.assertEqual(r.status, 201)
        self.assertEqual(len(self.events_with(subject)), 1)
        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.status, 200)
        self.assertIn("UID:" + uid, r.body)

    def test_series_retry_completes_occurrences(self):
        """One transient Graph failure after the series was created leaves
        its EXDATEs and overrides unapplied; the client's retry with
        If-None-Match: * finishes the object instead of failing with 412."""
        for fault in ({"fault": "503", "operation": "deleteEvent"},
                      {"fault": "503", "operation": "updateEvent"},
                      {"fault": "429", "operation": "instances",
                       "retry_after": "0.2"}):
            uid = self.unique("halfseries")
            name = uid + ".ics"
            subject = self.unique("Half series")
            text = "\r\n".join([
                "BEGIN:VCALENDAR", "VERSION:2.0",
                "PRODID:-//Nextal//scenario//EN",
                "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
                "DTSTART;TZID=Europe/Berlin:20300304T090000",
                "DTEND;TZID=Europe/Berlin:20300304T100000",
                "RRULE:FREQ=DAILY;COUNT=20", "SUMMARY:" + subject,
                "EXDATE;TZID=Europe/Berlin:20300305T090000",
                "EXDATE;TZID=Europe/Berlin:20300306T090000",
                "END:VEVENT",
                "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
                "RECURRENCE-ID;TZID=Europe/Berlin:20300312T090000",
                "DTSTART;TZID=Europe/Berlin:20300312T150000",
                "DTEND;TZID=Europe/Berlin:20300312T160000",
                "SUMMARY:" + subject + " moved",
                "END:VEVENT", "END:VCALENDAR", ""])
            self.box.sim_post("/_sim/faults", dict(fault, mailbox=ALICE,
                                                   count=1))
            r = self.put(name, text, "If-None-Match: *")
            self.assertEqual(r.status, 503, (fault, r.body))
            r = self.put(name, text, "If-None-Match: *")
            self.assertEqual(r.status, 201, (fault, r.body))
            etag = r.header("ETag")
            r = self.curl("GET", self.obj_path(name))
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("ETag"), etag)
            self.assertIn("EXDATE;TZID=Europe/Berlin:20300305T090000", r.body)
            self.assertIn("EXDATE;TZID=Europe/Berlin:20300306T090000", r.body)
            self.assertIn("RECURRENCE-ID;TZID=Europe/Berlin:20300312T090000",
                          r.body)
            [ev] = self.events_with(subject)
            self.assertEqual(len(ev["_deleted_occurrences"]), 2)
            self.assertEqual(len(ev["_exceptions"]), 1)
            # Complete now: a further create is refused as usual.
            r = self.put(name, text, "If-None-Match: *")
            self.assertEqual(r.status, 412, (fault, r.body))

    def mailed(self, subject):
        """What attendees were mailed about the events titled subject*."""
        return [(i["kind"], i["occurrence"]) for i in self.invitations()
                if (i["subject"] or "").startswith(subject)]

    def test_identical_put_mails_nobody(self):
        """CalDAV clients write back what they read: Graph gets only what
        changed, and a PUT that changes nothing mails no attendee."""
        uid = self.unique("noop")
        name = uid + ".ics"
        subject = self.unique("Unchanged interview")
        r = self.put(name, vevent(uid, subject, extra="LOCATION:Room 4\n"
                                  "DESCRIPTION:Bring your portfolio.\n"
                                  "CATEGORIES:Interview,Design"),
                     "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        r = self.curl("GET", self.obj_path(name))
        text, etag = r.body, r.header("ETag")
        [before] = self.events_with(subject)

        for headers in (["If-Match: " + etag], []):
            r = self.put(name, text, *headers)
            self.assertEqual(r.status, 204, r.body)
            self.assertEqual(r.header("ETag"), etag)
        self.assertEqual(self.mailed(subject), [("request", None)])
        [after] = self.events_with(subject)
        self.assertEqual(after["changeKey"], before["changeKey"])

        # One property changed: one update.
        renamed = subject + " (renamed)"
        r = self.put(name, text.replace("SUMMARY:" + subject,
                                        "SUMMARY:" + renamed),
                     "If-Match: " + etag)
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(self.mailed(subject),
                         [("request", None), ("update", None)])

    def test_identical_series_put_mails_nobody(self):
        uid = self.unique("noop-series")
        name = uid + ".ics"
        subject = self.unique("Unchanged series")
        text = "\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//scenario//EN",
            "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
            "DTSTART;TZID=Europe/Berlin:20300304T090000",
            "DTEND;TZID=Europe/Berlin:20300304T100000",
            "RRULE:FREQ=DAILY;COUNT=10", "SUMMARY:" + subject,
            "ATTENDEE;CN=Jordan Candidate;ROLE=REQ-PARTICIPANT:"
            "mailto:jordan@example.net",
            "EXDATE;TZID=Europe/Berlin:20300305T090000",
            "EXDATE;TZID=Europe/Berlin:20300306T090000",
            "END:VEVENT"] + [x for day in ("08", "10") for x in (
                "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
                "RECURRENCE-ID;TZID=Europe/Berlin:203003%sT090000" % day,
                "DTSTART;TZID=Europe/Berlin:203003%sT150000" % day,
                "DTEND;TZID=Europe/Berlin:203003%sT160000" % day,
                "SUMMARY:%s moved %s" % (subject, day),
                "ATTENDEE;CN=Jordan Candidate;ROLE=REQ-PARTICIPANT:"
                "mailto:jordan@example.net",
                "END:VEVENT")] + ["END:VCALENDAR", ""])
        r = self.put(name, text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        created = self.mailed(subject)
        r = self.curl("GET", self.obj_path(name))
        read, etag = r.body, r.header("ETag")

        r = self.put(name, read, "If-Match: " + etag)
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(r.header("ETag"), etag)
        self.assertEqual(self.mailed(subject), created)
        [ev] = self.events_with(subject)

        # One override changed: one update, for that occurrence only.
        r = self.put(name, read.replace("SUMMARY:%s moved 10" % subject,
                                        "SUMMARY:%s moved 10 again" % subject),
                     "If-Match: " + etag)
        self.assertEqual(r.status, 204, r.body)
        [occ] = self.graph_get(
            "/v1.0/users/%s/events/%s/instances?startDateTime=2030-03-10T00:00:00Z"
            "&endDateTime=2030-03-11T00:00:00Z" % (ALICE, ev["id"]))["value"]
        self.assertEqual(self.mailed(subject)[len(created):],
                         [("update", occ["id"])])

    def test_concurrent_creates_make_one_object(self):
        """PUTs racing each other must not all be told they created the
        object: one wins, the others see what a later PUT would see."""
        from concurrent.futures import ThreadPoolExecutor
        self.box.sim_post("/_sim/latency", {"ms": 300})
        try:
            same_name = self.unique("race")
            subject = self.unique("Race")
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(
                    lambda i: self.put(same_name + ".ics",
                                       vevent(self.unique("uid%d" % i), subject),
                                       "If-None-Match: *").status, range(4)))
            self.assertEqual(sorted(answers), [201, 412, 412, 412])
            uid = self.unique("shared-uid")
            subject2 = self.unique("Same UID")
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(
                    lambda i: self.put(self.unique("n%d" % i) + ".ics",
                                       vevent(uid, subject2),
                                       "If-None-Match: *").status, range(4)))
            self.assertEqual(sorted(answers), [201, 403, 403, 403])
        finally:
            self.box.sim_post("/_sim/latency", {"ms": 0})
        self.assertEqual(len(self.events_with(subject)), 1)
        self.assertEqual(len(self.events_with(subject2)), 1)

    def test_override_of_no_occurrence_stores_nothing(self):
        uid = self.unique("bad-override")
        subject = self.unique("Series with a stray override")
        ics = "\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//scenario//EN",
            "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
            "DTSTART;TZID=Europe/Berlin:20300304T100000",
            "DTEND;TZID=Europe/Berlin:20300304T110000",
            "RRULE:FREQ=DAILY;COUNT=5", "SUMMARY:" + subject, "END:VEVENT",
            "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
            "RECURRENCE-ID;TZID=Europe/Berlin:20300305T093000",
            "DTSTART;TZID=Europe/Berlin:20300305T120000",
            "DTEND;TZID=Europe/Berlin:20300305T130000",
            "SUMMARY:" + subject, "END:VEVENT", "END:VCALENDAR", ""])
        name = uid + ".ics"
        r = self.put(name, ics, "If-None-Match: *")
        self.assertEqual(r.status, 403, r.body)
        self.assertIn("nothing was stored", r.body)
        self.assertEqual(self.curl("GET", self.obj_path(name)).status, 404)
        self.assertEqual(self.events_with(subject), [])

    def test_unreadable_time_range_is_refused(self):
        for attrs in ('start="garbage" end="20301201T000000Z"',
                      'start="20301201T000000Z" end="20300101T000000Z"'):
            body = ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" '
                    'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
                    '</D:prop><C:filter><C:comp-filter name="VCALENDAR">'
                    '<C:comp-filter name="VEVENT"><C:time-range %s/>'
                    '</C:comp-filter></C:comp-filter></C:filter>'
                    '</C:calendar-query>' % attrs)
            r = self.curl("REPORT", "/dav/calendars/%s/default/" % ALICE, body,
                          ("Content-Type: application/xml", "Depth: 1"))
            self.assertEqual(r.status, 403, r.body)
            self.assertIn("valid-filter", r.body)

    def test_refused_user(self):
        stranger = "erin@contoso.example"
        r = self.put("x.ics", vevent(self.unique("refused")), "If-None-Match: *",
                     address=stranger)
        self.assertEqual(r.status, 403)
        doc = ET.fromstring(r.body)
        self.assertEqual(doc.tag, DAV + "error")
        self.assertIsNotNone(doc.find(DAV + "need-privileges"))
        self.assertIn("user_not_linked", r.body)

    def test_all_day_event(self):
        uid = self.unique("allday")
        subject = self.unique("Assessment day")
        text = vevent(uid, subject, start="DTSTART;VALUE=DATE:20300415",
                      end="DTEND;VALUE=DATE:20300416")
        r = self.put(uid + ".ics", text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject)
        self.assertTrue(ev["isAllDay"])
        # Midnight to midnight in the mailbox's own zone, not in UTC.
        self.assertEqual(ev["originalStartTimeZone"], "W. Europe Standard Time")
        self.assertEqual(ev["start"]["dateTime"][:19], "2030-04-15T00:00:00")
        self.assertEqual(ev["end"]["dateTime"][:19], "2030-04-16T00:00:00")
        r = self.curl("GET", self.obj_path(uid + ".ics"))
        self.assertIn("DTSTART;VALUE=DATE:20300415", r.body)
        self.assertIn("DTEND;VALUE=DATE:20300416", r.body)

    def test_all_day_series_with_exdate(self):
        uid = self.unique("allday-series")
        subject = self.unique("Assessment days")
        text = vevent(uid, subject, start="DTSTART;VALUE=DATE:20300415",
                      end="DTEND;VALUE=DATE:20300416",
                      extra="RRULE:FREQ=WEEKLY;COUNT=3\nEXDATE;VALUE=DATE:20300422")
        r = self.put(uid + ".ics", text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject)
        # Occurrences start at midnight in the mailbox's zone (UTC+2 in
        # April): the EXDATE named the second one, 21 April 22:00 UTC.
        self.assertEqual(ev["_deleted_occurrences"], ["2030-04-21T22:00:00+00:00"])
        r = self.curl("GET", self.obj_path(uid + ".ics"))
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("DTSTART;VALUE=DATE:20300415", r.body)
        self.assertEqual(re.findall(r"^EXDATE.*$", r.body, re.M),
                         ["EXDATE;VALUE=DATE:20300422\r"])

    def test_windows_zone_name(self):
        uid = self.unique("wzone")
        subject = self.unique("Panel")
        text = vevent(
            uid, subject,
            start='DTSTART;TZID="W. Europe Standard Time":20300610T140000',
            end='DTEND;TZID="W. Europe Standard Time":20300610T150000')
        r = self.put(uid + ".ics", text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject)
        self.assertEqual(ev["originalStartTimeZone"], "W. Europe Standard Time")
        # Summer time in Berlin: 14:00 local is 12:00 UTC.
        self.assertEqual(ev["start"]["dateTime"][:16], "2030-06-10T12:00")
        # The TZID comes back as the client wrote it, with a VTIMEZONE of
        # that name holding Berlin's rules (UTC+2 in summer), in GET and in
        # a time-range REPORT that finds the event at 12:00 UTC.
        r = self.curl("GET", self.obj_path(uid + ".ics"))
        self.assertEqual(r.status, 200, r.body)
        self.assert_in_zone(r.body, "W. Europe Standard Time",
                            "20300610T140000", "20300610T150000",
                            location="Europe/Berlin")
        self.assertNotIn("TZID=Europe/Berlin", r.body)
        self.assertIn("TZOFFSETTO:+0200", r.body)
        cal = "/dav/calendars/%s/default/" % ALICE
        query = ('<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:'
                 'xml:ns:caldav"><D:prop><C:calendar-data/></D:prop>'
                 '<C:filter><C:comp-filter name="VCALENDAR">'
                 '<C:comp-filter name="VEVENT"><C:time-range '
                 'start="20300610T115900Z" end="20300610T120100Z"/>'
                 '</C:comp-filter></C:comp-filter></C:filter>'
                 '</C:calendar-query>')
        r = self.curl("REPORT", cal, query, ["Depth: 1"])
        self.assertEqual(r.status, 207, r.body)
        got = {x.find(DAV + "href").text: x
               for x in ET.fromstring(r.body).findall(DAV + "response")}
        data = got[cal + uid + ".ics"].find(".//%scalendar-data" % CAL).text
        self.assert_in_zone(data, "W. Europe Standard Time",
                            "20300610T140000", "20300610T150000",
                            location="Europe/Berlin")

    def test_invalid_calendar_data(self):
        r = self.put("bad.ics", "BEGIN:VCALENDAR\r\nthis is not iCalendar\r\n",
                     "If-None-Match: *")
        self.assertEqual(r.status, 403)
        self.assertIsNotNone(ET.fromstring(r.body).find(CAL + "valid-calendar-data"))
        todo = vevent(self.unique("todo")).replace("VEVENT", "VTODO")
        r = self.put("todo.ics", todo, "If-None-Match: *")
        self.assertEqual(r.status, 403)
        self.assertIsNotNone(
            ET.fromstring(r.body).find(CAL + "supported-calendar-component"))
        r = self.curl("PUT", self.obj_path("json.ics"), "{}",
                      ["Content-Type: application/json"])
        self.assertEqual(r.status, 415)
        # RFC 4791 5.3.2: the precondition the client can act on.
        doc = ET.fromstring(r.body)
        self.assertEqual(doc.tag, DAV + "error")
        self.assertIsNotNone(doc.find(CAL + "supported-calendar-data"), r.body)
        self.assertEqual(self.curl("GET", self.obj_path("json.ics")).status,
                         404)

    def test_impossible_date_refused_before_graph(self):
        cases = [("DTSTART:20261345T250000Z", "DTEND:20261346T250000Z",
                  "DTSTART 20261345T250000: there is no month 13"),
                 ("DTSTART:00000101T000000Z", "DTEND:00000101T010000Z",
                  "DTSTART 00000101T000000: year 0 is outside 1 to 9999"),
                 # Floating: refused without asking for the mailbox's zone.
                 ("DTSTART:20300230T090000", "DTEND:20300230T100000",
                  "DTSTART 20300230T090000: 2030-02 has no day 30")]
        for start, end, why in cases:
            uid = self.unique("impossible")
            subject = self.unique("Impossible")
            before = self.sim_stats_requests(ALICE)
            r = self.put(uid + ".ics", vevent(uid, subject, start, end),
                         "If-None-Match: *")
            self.assertEqual(r.status, 403, r.body)
            doc = ET.fromstring(r.body)
            self.assertIsNotNone(doc.find(CAL + "valid-calendar-data"), r.body)
            self.assertIn(why, r.body)
            self.assertEqual(self.events_with(subject), [])
            self.assertEqual(self.sim_stats_requests(ALICE), before,
                             "Graph was called for " + start)

    def test_graph_refuses_impossible_date_time_with_400(self):
        """The simulator answers an event dateTime that is no time as
        Graph does, with a 400 naming the value, never a 500."""
        for value, zone in (("2026-13-45T25:00:00", "UTC"),
                            ("0000-01-01T00:00:00", "UTC"),
                            ("2030-03-04T09:00:00+3h", "UTC"),
                            # Before year 1 once moved to UTC.
                            ("0001-01-01T00:00:00", "Tokyo Standard Time")):
            status, body = self.graph_send(
                "POST", "/v1.0/users/%s/events" % ALICE,
                {"subject": "impossible",
                 "start": {"dateTime": value, "timeZone": zone},
                 "end": {"dateTime": "2030-03-04T10:00:00", "timeZone": "UTC"}})
            self.assertEqual(status, 400, (value, body))
            self.assertEqual(body["error"]["code"], "ErrorInvalidParameter")
            self.assertEqual(body["error"]["message"],
                             "The value '%s' of parameter 'DateTime' is "
                             "invalid." % value)
        self.assertEqual(self.events_with("impossible"), [])

    def test_refused_recurrence_is_explained(self):
        uid = self.unique("hourly")
        r = self.put(uid + ".ics", vevent(uid, extra="RRULE:FREQ=HOURLY;COUNT=3"),
                     "If-None-Match: *")
        self.assertEqual(r.status, 403)
        doc = ET.fromstring(r.body)
        self.assertIsNotNone(doc.find(CAL + "valid-calendar-object-resource"))
        self.assertIn("HOURLY", r.body)
        self.assertEqual(self.curl("GET", self.obj_path(uid + ".ics")).status,
                         404)

    def test_weekly_series_with_cancelled_and_moved_occurrence(self):
        uid = self.unique("series")
        name = uid + ".ics"
        subject = self.unique("Weekly panel")
        moved_subject = subject + " (moved)"
        text = "\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//scenario//EN",
            "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
            "DTSTART;TZID=Europe/Berlin:20300107T100000",
            "DTEND;TZID=Europe/Berlin:20300107T110000",
            "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4", "SUMMARY:" + subject,
            "EXDATE;TZID=Europe/Berlin:20300114T100000",
            "END:VEVENT",
            "BEGIN:VEVENT", "UID:" + uid, "DTSTAMP:20300101T000000Z",
            "RECURRENCE-ID;TZID=Europe/Berlin:20300121T100000",
            "DTSTART;TZID=Europe/Berlin:20300121T140000",
            "DTEND;TZID=Europe/Berlin:20300121T150000",
            "SUMMARY:" + moved_subject,
            "END:VEVENT", "END:VCALENDAR", ""])
        r = self.put(name, text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        etag = r.header("ETag")
        [ev] = self.events_with(subject)
        self.assertEqual(ev["recurrence"]["pattern"]["type"], "weekly")
        # Berlin is UTC+1 in January.
        self.assertEqual(ev["_deleted_occurrences"], ["2030-01-14T09:00:00+00:00"])
        [(key, exc)] = ev["_exceptions"].items()
        self.assertEqual(key, "2030-01-21T09:00:00+00:00")
        self.assertEqual(exc["start"][:16], "2030-01-21T13:00")
        self.assertEqual(exc["overrides"]["subject"], moved_subject)

        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("ETag"), etag)
        self.assertIn("RRULE:FREQ=WEEKLY", r.body)
        self.assertIn("EXDATE;TZID=Europe/Berlin:20300114T100000", r.body)
        self.assertIn("RECURRENCE-ID;TZID=Europe/Berlin:20300121T100000", r.body)
        self.assertIn("SUMMARY:" + moved_subject, r.body)
        self.assertIn("DTSTART;TZID=Europe/Berlin:20300121T140000", r.body)

        # Expanded by the server: the three remaining instances in UTC.
        query = ('<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:'
                 'xml:ns:caldav"><D:prop><C:calendar-data><C:expand '
                 'start="20300101T000000Z" end="20300201T000000Z"/>'
                 '</C:calendar-data></D:prop><C:filter><C:comp-filter '
                 'name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range '
                 'start="20300101T000000Z" end="20300201T000000Z"/>'
                 '</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')
        r = self.curl("REPORT", "/dav/calendars/%s/default/" % ALICE, query,
                      ["Depth: 1"])
        self.assertEqual(r.status, 207)
        datas = [x.text for x in ET.fromstring(r.body).iter(CAL + "calendar-data")
                 if "UID:" + uid in x.text]
        self.assertEqual(len(datas), 1)
        data = datas[0]
        self.assertNotIn("RRULE", data)
        self.assertNotIn("VTIMEZONE", data)
        self.assertEqual(sorted(re.findall(r"^DTSTART:(\S+)", data, re.M)),
                         ["20300107T090000Z", "20300121T130000Z",
                          "20300128T090000Z"])
        self.assertIn("RECURRENCE-ID:20300121T090000Z", data)

        # Outlook moves the last occurrence and deletes the first one: the
        # series' ETag changes and the next GET shows both.
        [last] = self.graph_get(
            "/v1.0/users/%s/events/%s/instances?startDateTime=2030-01-28T00:00:00Z"
            "&endDateTime=2030-01-29T00:00:00Z" % (ALICE, ev["id"]))["value"]
        [first] = self.graph_get(
            "/v1.0/users/%s/events/%s/instances?startDateTime=2030-01-07T00:00:00Z"
            "&endDateTime=2030-01-08T00:00:00Z" % (ALICE, ev["id"]))["value"]
        self.sim_patch("/_sim/calendars/%s/events/%s" % (ALICE, last["id"]),
                       {"start": {"dateTime": "2030-01-28T15:00:00",
                                  "timeZone": "W. Europe Standard Time"},
                        "end": {"dateTime": "2030-01-28T16:00:00",
                                "timeZone": "W. Europe Standard Time"}})
        self.sim_request("DELETE", "/_sim/calendars/%s/events/%s"
                         % (ALICE, first["id"]))
        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.status, 200)
        self.assertNotEqual(r.header("ETag"), etag)
        self.assertIn("RECURRENCE-ID;TZID=Europe/Berlin:20300128T100000", r.body)
        self.assertIn("DTSTART;TZID=Europe/Berlin:20300128T150000", r.body)
        self.assertIn("EXDATE;TZID=Europe/Berlin:20300107T100000", r.body)
        # A stale ETag can no longer overwrite the series.
        r = self.put(name, text, "If-Match: " + etag)
        self.assertEqual(r.status, 412)

    def graph_token(self):
        """A token of another application of the tenant."""
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": sandbox.CLIENT_ID,
            "client_secret": sandbox.CLIENT_SECRET,
            "scope": "https://graph.microsoft.com/.default"}).encode()
        with urllib.request.urlopen(self.box.sim_url(
                "/%s/oauth2/v2.0/token" % sandbox.TENANT_ID), form,
                timeout=10) as r:
            return json.load(r)["access_token"]

    def graph_get(self, path, headers=None):
        """Reads Graph as another application of the tenant would."""
        req = urllib.request.Request(self.box.sim_url(path), headers=dict(
            headers or {}, Authorization="Bearer " + self.graph_token()))
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def graph_send(self, method, path, body):
        """Writes to Graph as another application; returns status and the
        JSON answer, errors included."""
        req = urllib.request.Request(
            self.box.sim_url(path), data=json.dumps(body).encode(),
            method=method, headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer " + self.graph_token()})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def test_winnipeg_series_across_dst_change(self):
        uid = self.unique("winnipeg")
        subject = self.unique("Winnipeg weekly")
        # Daylight saving time starts in Winnipeg on 10 March 2030.
        text = vevent(uid, subject,
                      start="DTSTART;TZID=America/Winnipeg:20300304T100000",
                      end="DTEND;TZID=America/Winnipeg:20300304T110000",
                      extra="RRULE:FREQ=WEEKLY;COUNT=2")
        r = self.put(uid + ".ics", text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject)
        self.assertEqual(ev["originalStartTimeZone"], "Central Standard Time")
        view = self.graph_get(
            "/v1.0/users/%s/events/%s/instances?startDateTime=2030-03-01T00:00:00Z"
            "&endDateTime=2030-03-20T00:00:00Z" % (ALICE, ev["id"]))["value"]
        starts = [v["start"]["dateTime"][:16] for v in view]
        # 10:00 local both weeks: UTC-6, then UTC-5.
        self.assertEqual(starts, ["2030-03-04T16:00", "2030-03-11T15:00"])
        r = self.curl("GET", self.obj_path(uid + ".ics"))
        # Graph keeps only "Central Standard Time", whose IANA zone is
        # America/Chicago; the object comes back in the zone it was written
        # in, with that zone's own VTIMEZONE.
        self.assert_in_zone(r.body, "America/Winnipeg", "20300304T100000",
                            "20300304T110000")
        self.assertNotIn("Chicago", r.body)
        self.assertIn("RRULE:FREQ=WEEKLY;COUNT=2", r.body)
        self.assertNotIn("EXDATE", r.body)
        # REPORT answers the same way.
        cal = "/dav/calendars/%s/default/" % ALICE
        body = ('<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>'
                '<C:calendar-data/></D:prop><D:href>%s%s.ics</D:href>'
                '</C:calendar-multiget>' % (cal, uid))
        r = self.curl("REPORT", cal, body, ["Depth: 1"])
        self.assertEqual(r.status, 207)
        data = ET.fromstring(r.body).find(".//%scalendar-data" % CAL).text
        self.assert_in_zone(data, "America/Winnipeg",
                            "20300304T100000", "20300304T110000")

    def assert_in_zone(self, text, zone, start, end, location=None):
        """DTSTART and DTEND in zone, whose VTIMEZONE (the only one) is
        libical's own for the IANA zone location (zone itself by default).
        XML answers may carry LF for CRLF."""
        text = text.replace("\r\n", "\n").replace("\n ", "")
        self.assertIn("\nDTSTART;TZID=%s:%s\n" % (zone, start), text)
        self.assertIn("\nDTEND;TZID=%s:%s\n" % (zone, end), text)
        [vtz] = re.findall(r"BEGIN:VTIMEZONE\n.*?END:VTIMEZONE", text, re.S)
        self.assertIn("\nTZID:%s\n" % zone, vtz)
        self.assertIn("\nX-LIC-LOCATION:%s\n" % (location or zone), vtz)

    def test_zone_changed_in_outlook_is_followed(self):
        uid = self.unique("moved-zone")
        subject = self.unique("Winnipeg call")
        name = uid + ".ics"
        text = vevent(uid, subject,
                      start="DTSTART;TZID=America/Winnipeg:20300604T100000",
                      end="DTEND;TZID=America/Winnipeg:20300604T110000")
        self.assertEqual(self.put(name, text, "If-None-Match: *").status, 201)
        self.assert_in_zone(self.curl("GET", self.obj_path(name)).body,
                            "America/Winnipeg", "20300604T100000",
                            "20300604T110000")
        # Someone moves the call to New York time in Outlook, same instant.
        [ev] = self.events_with(subject)
        self.sim_patch("/_sim/calendars/%s/events/%s" % (ALICE, ev["id"]), {
            "start": {"dateTime": "2030-06-04T11:00:00",
                      "timeZone": "Eastern Standard Time"},
            "end": {"dateTime": "2030-06-04T12:00:00",
                    "timeZone": "Eastern Standard Time"}})
        r = self.curl("GET", self.obj_path(name))
        self.assert_in_zone(r.body, "America/New_York", "20300604T110000",
                            "20300604T120000")
        self.assertNotIn("America/Winnipeg", r.body)

    def test_floating_time_in_mailbox_zone(self):
        # Bob's mailbox is in Tokyo; a time without TZID is his 09:00.
        self.box.sim_post("/_sim/mailboxsettings/" + BOB,
                          {"timeZone": "Tokyo Standard Time"})
        uid = self.unique("floating")
        subject = self.unique("Floating interview")
        text = vevent(uid, subject, start="DTSTART:20300304T090000",
                      end="DTEND:20300304T100000")
        r = self.put(uid + ".ics", text, "If-None-Match: *", address=BOB)
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject, BOB)
        self.assertEqual(ev["originalStartTimeZone"], "Tokyo Standard Time")
        self.assertEqual(ev["originalEndTimeZone"], "Tokyo Standard Time")
        # 09:00 in Tokyo (UTC+9) is midnight UTC, not 09:00 UTC.
        self.assertEqual(ev["start"]["dateTime"][:19], "2030-03-04T00:00:00")
        local = self.graph_get(
            "/v1.0/users/%s/events/%s" % (BOB, ev["id"]),
            {"Prefer": 'outlook.timezone="Tokyo Standard Time"'})
        self.assertEqual(local["start"]["dateTime"][:19], "2030-03-04T09:00:00")
        r = self.curl("GET", self.obj_path(uid + ".ics", BOB))
        self.assert_in_zone(r.body, "Asia/Tokyo", "20300304T090000",
                            "20300304T100000")

    def test_floating_time_refused_without_mailbox_zone(self):
        # The mailbox's zone cannot be read (here: the tenant denies it).
        self.box.sim_post("/_sim/faults", {
            "fault": "400", "status": 403, "code": "ErrorAccessDenied",
            "message": "Access is denied. Check credentials and try again.",
            "operation": "getMailboxTimeZone", "mailbox": DAVE, "count": 1})
        uid = self.unique("floating-refused")
        subject = self.unique("Floating, no zone")
        text = vevent(uid, subject, start="DTSTART:20300304T090000",
                      end="DTEND:20300304T100000")
        r = self.put(uid + ".ics", text, "If-None-Match: *", address=DAVE)
        self.assertEqual(r.status, 403, r.body)
        doc = ET.fromstring(r.body)
        self.assertIsNotNone(doc.find(CAL + "valid-calendar-data"))
        self.assertIn("DTSTART is a floating time", r.body)
        self.assertIn("default time zone, the mailbox's own, which could not "
                      "be read from Microsoft Graph (403 ErrorAccessDenied)",
                      r.body)
        self.assertEqual(self.events_with(subject, DAVE), [])
        # Nothing was cached from the failure: once Graph answers, the
        # same PUT lands at 09:00 in the mailbox's zone.
        r = self.put(uid + ".ics", text, "If-None-Match: *", address=DAVE)
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject, DAVE)
        self.assertEqual(ev["originalStartTimeZone"], "W. Europe Standard Time")
        self.assertEqual(ev["start"]["dateTime"][:19], "2030-03-04T08:00:00")

    def test_teams_interview(self):
        uid = self.unique("teams")
        subject = self.unique("Teams interview")
        text = vevent(uid, subject, start="DTSTART:20301001T080000Z",
                      end="DTEND:20301001T090000Z",
                      extra="X-NEXTAL-ONLINE-MEETING:TEAMS")
        r = self.put(uid + ".ics", text, "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject)
        self.assertTrue(ev["isOnlineMeeting"])
        self.assertEqual(ev["onlineMeetingProvider"], "teamsForBusiness")
        join = ev["onlineMeeting"]["joinUrl"]
        self.assertTrue(join.startswith("https://"))
        r = self.curl("GET", self.obj_path(uid + ".ics"))
        body = r.body.replace("\r\n ", "")  # unfold long lines
        self.assertIn("X-MICROSOFT-SKYPETEAMSMEETINGURL:" + join, body)
        self.assertRegex(body, r"CONFERENCE;[^:]*VALUE=URI[^:]*:" + re.escape(join))

    def test_cancelled_and_client_scheduled(self):
        uid = self.unique("cancel")
        name = uid + ".ics"
        subject = self.unique("Cancelled later")
        # The candidate is invited by Nextal itself (SCHEDULE-AGENT=CLIENT):
        # Exchange must not mail them a second invitation.
        extra = ("ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:%s\n"
                 "ATTENDEE;SCHEDULE-AGENT=CLIENT;CN=Sam:mailto:sam@example.net"
                 % BOB)
        r = self.put(name, vevent(uid, subject, extra=extra), "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        [ev] = self.events_with(subject)
        invited = sorted(a["emailAddress"]["address"] for a in ev["attendees"])
        self.assertEqual(invited, [BOB, "jordan@example.net"])
        self.assertNotIn("sam@example.net", json.dumps(self.invitations()))

        cancelled = vevent(uid, subject, extra=extra + "\nSTATUS:CANCELLED")
        r = self.put(name, cancelled, "If-Match: " + r.header("ETag"))
        self.assertEqual(r.status, 204, r.body)
        self.assertEqual(self.events_with(subject), [])
        kinds = [i["kind"] for i in self.invitations() if i["subject"] == subject]
        self.assertEqual(kinds, ["request", "cancel"])
        self.assertEqual(self.curl("GET", self.obj_path(name)).status, 404)

    def test_client_scheduled_attendees_read_back(self):
        uid = self.unique("client-sched")
        name = uid + ".ics"
        subject = self.unique("Candidate invited by Nextal")
        cal = "/dav/calendars/%s/default/" % ALICE
        sam = "ATTENDEE;SCHEDULE-AGENT=CLIENT;CN=Sam:mailto:sam@example.net"
        pat = ("ATTENDEE;SCHEDULE-AGENT=NONE;ROLE=OPT-PARTICIPANT:"
               "mailto:pat@example.net")
        bob = "ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:%s" % BOB

        def unfolded(text):
            return re.sub(r"\r?\n[ \t]", "", text)

        def graph_left_them_out():
            [ev] = self.events_with(subject)
            invited = sorted(a["emailAddress"]["address"]
                             for a in ev["attendees"])
            self.assertEqual(invited, [BOB, "jordan@example.net"])
            mailed = json.dumps(self.invitations())
            self.assertNotIn("sam@example.net", mailed)
            self.assertNotIn("pat@example.net", mailed)

        r = self.put(name, vevent(uid, subject, extra="\n".join([bob, sam, pat])),
                     "If-None-Match: *")
        self.assertEqual(r.status, 201, r.body)
        etag1 = r.header("ETag")
        graph_left_them_out()

        # GET gives them back as written, with their SCHEDULE-AGENT.
        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("ETag"), etag1)
        body = unfolded(r.body)
        self.assertIn("\r\n" + sam + "\r\n", body)
        self.assertIn("\r\n" + pat + "\r\n", body)
        self.assertEqual(body.count("mailto:sam@example.net"), 1)

        # So do REPORTs, the multiget (one GET each) and the time-range
        # query (whole from calendarView), and every path gives one ETag.
        multiget = ('<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:'
                    'params:xml:ns:caldav"><D:prop><D:getetag/>'
                    '<C:calendar-data/></D:prop><D:href>%s%s</D:href>'
                    '</C:calendar-multiget>' % (cal, name))
        query = ('<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:'
                 'xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/>'
                 '</D:prop><C:filter><C:comp-filter name="VCALENDAR">'
                 '<C:comp-filter name="VEVENT"><C:time-range '
                 'start="20300304T000000Z" end="20300305T000000Z"/>'
                 '</C:comp-filter></C:comp-filter></C:filter>'
                 '</C:calendar-query>')
        for report in (multiget, query):
            r = self.curl("REPORT", cal, report, ["Depth: 1"])
            self.assertEqual(r.status, 207)
            got = {x.find(DAV + "href").text: x
                   for x in ET.fromstring(r.body).findall(DAV + "response")}
            data = got[cal + name].find(".//%scalendar-data" % CAL).text
            self.assertIn(sam, unfolded(data))
            self.assertEqual(
                got[cal + name].find(".//%sgetetag" % DAV).text, etag1)
        self.assertEqual(self.propfind_etags()[1][name], etag1)

        # A PUT that changes only the candidate's line: a new ETag, the new
        # line back, and still nothing of theirs in Graph.
        samantha = sam.replace("CN=Sam", "CN=Samantha")
        r = self.put(name, vevent(uid, subject,
                                  extra="\n".join([bob, samantha, pat])),
                     "If-Match: " + etag1)
        self.assertEqual(r.status, 204, r.body)
        etag2 = r.header("ETag")
        self.assertNotEqual(etag2, etag1)
        r = self.curl("GET", self.obj_path(name))
        self.assertEqual(r.header("ETag"), etag2)
        self.assertIn("\r\n" + samantha + "\r\n", unfolded(r.body))
        self.assertNotIn("CN=Sam:", unfolded(r.body))
        self.assertEqual(self.propfind_etags()[1][name], etag2)
        graph_left_them_out()

        # Each PUT replaces what was remembered.
        r = self.put(name, vevent(uid, subject, extra=bob), "If-Match: " + etag2)
        self.assertEqual(r.status, 204, r.body)
        r = self.curl("GET", self.obj_path(name))
        self.assertNotIn("sam@example.net", r.body)
        self.assertNotIn("pat@example.net", r.body)
        self.assertEqual(self.curl("DELETE", self.obj_path(name)).status, 204)

    def invitations(self, address=ALICE):
        quoted = urllib.parse.quote(address)
        return self.box.sim_get(
            "/_sim/calendars/%s/invitations" % quoted)["invitations"]

    def test_events_made_in_outlook_are_objects_too(self):
        single = self.unique("Made in Outlook")
        weekly = self.unique("Outlook weekly")
        self.box.sim_post("/_sim/calendars/%s/events" % ALICE, {
            "subject": single,
            "start": {"dateTime": "2030-11-05T10:00:00",
                      "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": "2030-11-05T11:00:00",
                    "timeZone": "W. Europe Standard Time"}})
        self.box.sim_post("/_sim/calendars/%s/events" % ALICE, {
            "subject": weekly,
            "start": {"dateTime": "2030-10-28T15:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-10-28T15:30:00", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1,
                            "daysOfWeek": ["monday"]},
                "range": {"type": "numbered", "startDate": "2030-10-28",
                          "numberOfOccurrences": 3}}})
        by_subject = {e["subject"]: e for e in self.events()}
        cal = "/dav/calendars/%s/default/" % ALICE
        query = ('<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:'
                 'xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/>'
                 '</D:prop><C:filter><C:comp-filter name="VCALENDAR">'
                 '<C:comp-filter name="VEVENT"><C:time-range '
                 'start="20301104T000000Z" end="20301106T000000Z"/>'
                 '</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')
        r = self.curl("REPORT", cal, query, ["Depth: 1"])
        self.assertEqual(r.status, 207)
        found = {}
        for resp in ET.fromstring(r.body).findall(DAV + "response"):
            # Unfold long lines (RFC 5545 3.1).
            data = resp.find(".//%scalendar-data" % CAL).text.replace(
                "\r\n ", "")
            found[re.search(r"^SUMMARY:(.*)\r$", data, re.M).group(1)] = (
                resp.find(DAV + "href").text, data)
        self.assertEqual(set(found), {single, weekly})
        href, data = found[single]
        self.assertRegex(href, r"/outlook-[0-9a-f]{32}\.ics$")
        self.assertIn("UID:" + by_subject[single]["iCalUId"], data)
        self.assertIn("RRULE:FREQ=WEEKLY", found[weekly][1])
        # The adopted object reads and deletes like any other.
        r = self.curl("GET", href)
        self.assertEqual(r.status, 200)
        self.assertIn("DTSTART;TZID=Europe/Berlin:20301105T100000", r.body)
        _, etags = self.propfind_etags()
        self.assertEqual(etags[href.rsplit("/", 1)[1]], r.header("ETag"))
        r = self.curl("DELETE", href, None, ["If-Match: " + r.header("ETag")])
        self.assertEqual(r.status, 204)
        self.assertEqual(self.events_with(single), [])

    # ---- REPORTs with curl ----

    def test_multiget_and_time_range_query(self):
        names = []
        subjects = []
        for day in ("05", "06"):
            uid = self.unique("report")
            subject = self.unique("Report")
            text = vevent(uid, subject,
                          start="DTSTART:203005%sT090000Z" % day,
                          end="DTEND:203005%sT100000Z" % day)
            self.assertEqual(self.put(uid + ".ics", text).status, 201)
            names.append(uid + ".ics")
            subjects.append(subject)
        cal = "/dav/calendars/%s/default/" % ALICE
        body = ('<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
                '<C:calendar-data/></D:prop>'
                + "".join("<D:href>%s%s</D:href>" % (cal, n) for n in names)
                + "<D:href>%smissing.ics</D:href>" % cal
                + "</C:calendar-multiget>")
        r = self.curl("REPORT", cal, body, ["Depth: 1"])
        self.assertEqual(r.status, 207)
        doc = ET.fromstring(r.body)
        got = {x.find(DAV + "href").text: x for x in doc.findall(DAV + "response")}
        self.assertEqual(set(got), {cal + n for n in names} | {cal + "missing.ics"})
        self.assertIn("404", got[cal + "missing.ics"].find(DAV + "status").text)
        data = got[cal + names[0]].find(".//%scalendar-data" % CAL).text
        self.assertIn("SUMMARY:" + subjects[0], data)

        query = ('<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" '
                 'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/>'
                 '</D:prop><C:filter><C:comp-filter name="VCALENDAR">'
                 '<C:comp-filter name="VEVENT"><C:time-range '
                 'start="20300505T000000Z" end="20300506T000000Z"/>'
                 '</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')
        r = self.curl("REPORT", cal, query, ["Depth: 1"])
        self.assertEqual(r.status, 207)
        hrefs = [x.text for x in ET.fromstring(r.body).findall(
            "%sresponse/%shref" % (DAV, DAV))]
        self.assertEqual(hrefs, [cal + names[0]])

        # With calendar-data, over both days: the events come whole from
        # the one calendarView call, with the ETags a GET gives.
        query = query.replace("<D:getetag/>", "<D:getetag/><C:calendar-data/>")
        query = query.replace('end="20300506T000000Z"', 'end="20300507T000000Z"')
        before = self.sim_stats_requests(ALICE)
        r = self.curl("REPORT", cal, query, ["Depth: 1"])
        self.assertEqual(r.status, 207)
        self.assertEqual(self.sim_stats_requests(ALICE) - before, 1)
        got = {x.find(DAV + "href").text: x
               for x in ET.fromstring(r.body).findall(DAV + "response")}
        self.assertEqual(set(got), {cal + n for n in names})
        for name, subject in zip(names, subjects):
            data = got[cal + name].find(".//%scalendar-data" % CAL).text
            self.assertIn("SUMMARY:" + subject, data)
            etag = got[cal + name].find(".//%sgetetag" % DAV).text
            self.assertEqual(self.curl("GET", cal + name).header("ETag"), etag)

    def test_free_busy_query(self):
        uid = self.unique("busy")
        text = vevent(uid, self.unique("Busy"), start="DTSTART:20300702T130000Z",
                      end="DTEND:20300702T140000Z")
        self.assertEqual(self.put(uid + ".ics", text).status, 201)
        body = ('<?xml version="1.0"?><C:free-busy-query '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range '
                'start="20300702T000000Z" end="20300703T000000Z"/>'
                '</C:free-busy-query>')
        r = self.curl("REPORT", "/dav/calendars/%s/default/" % ALICE, body,
                      ["Depth: 1"])
        self.assertEqual(r.status, 200)
        self.assertIn("BEGIN:VFREEBUSY", r.body)
        self.assertIn("FREEBUSY;FBTYPE=BUSY:20300702T130000Z/20300702T140000Z",
                      r.body)

    def test_free_busy_of_an_interview_panel(self):
        # Bob and Carol have interviews; Dave is free; Zed is no user.
        for who, hour in ((BOB, "09"), (CAROL, "13")):
            uid = self.unique("panel")
            text = vevent(uid, self.unique("Busy"),
                          start="DTSTART:20300903T%s0000Z" % hour,
                          end="DTEND:20300903T%s3000Z" % hour)
            self.assertEqual(self.put(uid + ".ics", text, address=who).status, 201)
        request = "\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//scenario//EN",
            "METHOD:REQUEST", "BEGIN:VFREEBUSY", "UID:fb-" + uuid.uuid4().hex,
            "DTSTAMP:20300101T000000Z", "DTSTART:20300903T000000Z",
            "DTEND:20300904T000000Z", "ORGANIZER:mailto:" + ALICE,
            "ATTENDEE:mailto:" + BOB, "ATTENDEE:mailto:" + CAROL,
            "ATTENDEE:mailto:" + DAVE, "ATTENDEE:mailto:zed@contoso.example",
            "END:VFREEBUSY", "END:VCALENDAR", ""])
        r = self.curl("PROPFIND", "/dav/principals/%s/" % ALICE,
                      '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:'
                      'ns:caldav"><D:prop><C:schedule-outbox-URL/></D:prop>'
                      '</D:propfind>', ["Depth: 0"])
        outbox = ET.fromstring(r.body).find(
            ".//%sschedule-outbox-URL/%shref" % (CAL, DAV)).text
        self.assertEqual(outbox, "/dav/calendars/%s/outbox/" % ALICE)
        before = self.sim_stats_requests(ALICE)
        ops_before = self.sim_stats_operations(ALICE)
        r = self.curl("POST", outbox, request,
                      ["Content-Type: text/calendar; charset=utf-8"])
        self.assertEqual(r.status, 200, r.body)
        # One call for the whole panel, and it is getSchedule (the
        # simulator names only POST .../calendar/getSchedule so).
        self.assertEqual(self.sim_stats_requests(ALICE), before + 1)
        ops_after = self.sim_stats_operations(ALICE)
        # A token refresh the agent may make meanwhile is not a Graph call.
        grown = {op: n - ops_before.get(op, 0) for op, n in ops_after.items()
                 if n != ops_before.get(op, 0) and op != "token"}
        self.assertEqual(grown, {"getSchedule": 1})
        doc = ET.fromstring(r.body)
        self.assertEqual(doc.tag, CAL + "schedule-response")
        got = {}
        for resp in doc.findall(CAL + "response"):
            who = resp.find("%srecipient/%shref" % (CAL, DAV)).text
            data = resp.find(CAL + "calendar-data")
            got[who] = (resp.find(CAL + "request-status").text,
                        data.text if data is not None else "")
        self.assertEqual(got["mailto:" + BOB][0], "2.0;Success")
        self.assertIn("METHOD:REPLY", got["mailto:" + BOB][1])
        self.assertIn("FREEBUSY;FBTYPE=BUSY:20300903T090000Z/20300903T093000Z",
                      got["mailto:" + BOB][1])
        self.assertIn("FREEBUSY;FBTYPE=BUSY:20300903T130000Z/20300903T133000Z",
                      got["mailto:" + CAROL][1])
        self.assertEqual(got["mailto:" + DAVE][0], "2.0;Success")
        self.assertNotIn("FREEBUSY", got["mailto:" + DAVE][1].replace(
            "VFREEBUSY", ""))
        self.assertTrue(got["mailto:zed@contoso.example"][0].startswith("3.7"))

        # Someone else's outbox cannot be used in Alice's name.
        r = self.curl("POST", "/dav/calendars/%s/outbox/" % BOB, request,
                      ["Content-Type: text/calendar; charset=utf-8"])
        self.assertEqual(r.status, 403)
        self.assertIsNotNone(ET.fromstring(r.body).find(CAL + "organizer-allowed"))

    def sim_stats_requests(self, address):
        stats = self.box.sim_get("/_sim/stats")["mailboxes"]
        return stats.get(address, {}).get("requests", 0)

    def sim_stats_operations(self, address):
        """Graph requests of address so far, by the simulator's operation
        name ("getSchedule", "createEvent", ...)."""
        stats = self.box.sim_get("/_sim/stats")["mailboxes"]
        return dict(stats.get(address, {}).get("operations", {}))

    # ---- tsdav (npm) ----

    def test_tsdav_client(self):
        clients = os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "clients")
        if not os.path.isdir(os.path.join(clients, "node_modules", "tsdav")):
            self.fail("tsdav missing: run npm ci in tests/clients")
        uid = self.unique("tsdav")
        out = subprocess.run(
            ["node", os.path.join(clients, "caldav_tsdav.js"),
             str(self.box.http_port), sandbox.SERVICE_USER,
             sandbox.SERVICE_PASSWORD, ALICE, uid],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        res = json.loads(out.stdout)
        [cal] = res["calendars"]
        self.assertTrue(cal["url"].endswith("/dav/calendars/%s/default/" % ALICE))
        self.assertEqual(cal["components"], ["VEVENT"])
        self.assertEqual(res["created"]["status"], 201)
        self.assertEqual(res["fetched"]["etag"], res["created"]["etag"])
        self.assertIn("UID:" + uid, res["fetched"]["data"])
        self.assert_in_zone(res["fetched"]["data"], "America/Winnipeg",
                            "20300310T090000", "20300310T100000")
        self.assertNotIn("Chicago", res["fetched"]["data"])
        self.assertEqual(res["updated"]["status"], 204)
        self.assertNotEqual(res["updated"]["etag"], res["created"]["etag"])
        self.assertEqual(res["stale"]["status"], 412)
        # 14:00 in Winnipeg on the day summer time starts is 19:00 UTC.
        self.assertIn("20300310T190000Z/20300310T200000Z", res["freebusy"])
        self.assertEqual(res["deleted"]["status"], 204)
        self.assertEqual(self.events_with("Interview moved with tsdav"), [])
        self.assertEqual(self.events_with("Interview booked with tsdav"), [])

    # ---- python3-caldav ----

    def test_python_caldav_client(self):
        client = self.client()
        principal = client.principal()
        [calendar] = principal.calendars()
        self.assertEqual(urllib.parse.unquote(
            urllib.parse.urlparse(str(calendar.url)).path),
                         "/dav/calendars/%s/default/" % ALICE)

        uid = self.unique("pycaldav")
        subject = self.unique("Interview via python-caldav")
        event = calendar.save_event(vevent(
            uid, subject, start="DTSTART:20300812T090000Z",
            end="DTEND:20300812T100000Z"))
        self.assertEqual(len(self.events_with(subject)), 1)

        found = calendar.event_by_uid(uid)
        self.assertIn("SUMMARY:" + subject, found.data)

        results = calendar.date_search(
            datetime.datetime(2030, 8, 12, tzinfo=datetime.timezone.utc),
            datetime.datetime(2030, 8, 13, tzinfo=datetime.timezone.utc),
            expand=False)
        self.assertIn(uid, [str(e.icalendar_component["UID"]) for e in results])

        renamed = self.unique("Renamed")
        found.icalendar_component["SUMMARY"] = renamed
        found.save()
        self.assertEqual(len(self.events_with(renamed)), 1)
        self.assertEqual(self.events_with(subject), [])

        # The calendar's own free/busy (free-busy-query REPORT). The outbox
        # is tested with curl: python3-caldav 0.11 reads an outbox answer as
        # a multistatus, which RFC 6638's schedule-response is not.
        answer = calendar.freebusy_request(
            datetime.datetime(2030, 8, 12, tzinfo=datetime.timezone.utc),
            datetime.datetime(2030, 8, 13, tzinfo=datetime.timezone.utc))
        self.assertIn("20300812T090000Z/20300812T100000Z", answer.data)

        found.delete()
        self.assertEqual(self.events_with(renamed), [])
        with self.assertRaises(caldav.error.NotFoundError):
            calendar.event_by_uid(uid)
        self.assertIsNotNone(event)


class HttpTimeouts(AgentTestCase):
    """[http] request_timeout and idle_timeout are the listener's: a
    request still incomplete is answered 408, an idle connection closed
    without an answer, each after the configured seconds."""
    sandbox_options = {"extra_config":
                       "[http]\nrequest_timeout = 2\nidle_timeout = 1\n"}

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.box.http_port),
                                        timeout=10)
        self.addCleanup(sock.close)
        return sock

    def read_all(self, sock):
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk

    def test_idle_connection_closed_after_idle_timeout(self):
        sock = self.connect()
        started = time.monotonic()
        self.assertEqual(self.read_all(sock), b"")
        waited = time.monotonic() - started
        # Generous above, for a loaded machine: the default is 60 s.
        self.assertGreater(waited, 0.8)
        self.assertLess(waited, 5)

    def test_incomplete_request_is_408_after_request_timeout(self):
        sock = self.connect()
        started = time.monotonic()
        # Half a request line, then nothing: longer than the idle timeout,
        # which no longer applies once a request has begun.
        sock.sendall(b"OPTIONS /dav/ HTTP/1.1\r\nHost: x\r\n")
        answer = self.read_all(sock).decode("latin-1")
        waited = time.monotonic() - started
        self.assertTrue(answer.startswith("HTTP/1.1 408"), answer)
        self.assertGreater(waited, 1.8)
        self.assertLess(waited, 6)


if __name__ == "__main__":
    main()
