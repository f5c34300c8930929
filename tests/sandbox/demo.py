"""The README's demo: one real SMTP message and one real CalDAV event go
through the agent, and the simulator shows what Microsoft Graph received."""

import json
import smtplib
import subprocess
import time
from email.message import EmailMessage

import sandbox


def send_mail(box):
    msg = EmailMessage()
    msg["From"] = "Alice Adams <alice@contoso.example>"
    msg["To"] = "Jordan Candidate <jordan.candidate@example.net>"
    msg["Subject"] = "Interview at Contoso — next steps"
    msg.set_content("Hello Jordan,\n\nThank you for applying. "
                    "Could we talk on Thursday?\n\nAlice\n")
    msg.add_alternative("<p>Hello Jordan,</p><p>Thank you for applying. "
                        "Could we talk on <b>Thursday</b>?</p><p>Alice</p>",
                        subtype="html")
    with smtplib.SMTP("127.0.0.1", box.smtp_port, timeout=30) as smtp:
        smtp.login(sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD)
        refused = smtp.send_message(msg)
        print("SMTP: accepted (%s refused)" % (len(refused) or "none"))


def put_event(box):
    start = time.strftime("%Y%m%d", time.gmtime(time.time() + 86400 * 7))
    ics = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Nextal//demo//EN",
        "BEGIN:VEVENT", "UID:demo-interview-1@nextal.example",
        "DTSTAMP:20261203T120000Z",
        "DTSTART;TZID=Europe/Berlin:%sT100000" % start,
        "DTEND;TZID=Europe/Berlin:%sT110000" % start,
        "SUMMARY:Interview: Jordan Candidate",
        "ORGANIZER;CN=Alice Adams:mailto:alice@contoso.example",
        "ATTENDEE;CN=Jordan Candidate;ROLE=REQ-PARTICIPANT:"
        "mailto:jordan.candidate@example.net",
        "END:VEVENT", "END:VCALENDAR", ""])
    url = ("http://127.0.0.1:%d/dav/calendars/alice@contoso.example/"
           "default/demo-interview-1.ics" % box.http_port)
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
         "-u", "%s:%s" % (sandbox.SERVICE_USER, sandbox.SERVICE_PASSWORD),
         "-X", "PUT", "-H", "Content-Type: text/calendar; charset=utf-8",
         "-H", "If-None-Match: *", "--data-binary", ics, url],
        capture_output=True, text=True)
    print("CalDAV: PUT answered %s" % out.stdout)
    return out.stdout


def run(box):
    print("\n== Sending a message over SMTP as alice@contoso.example")
    send_mail(box)
    sent = box.wait_sent("alice@contoso.example", 1)
    message = sent[-1]
    resource = message["resource"]
    print("Graph received sendMail for alice@contoso.example:")
    print(json.dumps({
        "subject": resource.get("subject"),
        "toRecipients": resource.get("toRecipients"),
        "body.contentType": resource.get("body", {}).get("contentType"),
        "savedToSentItems": message.get("savedToSentItems"),
        "recipients": message.get("recipients"),
    }, indent=2, ensure_ascii=False))

    print("\n== Booking an interview over CalDAV in alice's calendar")
    status = put_event(box)
    if status in ("201", "204"):
        events = box.sim_get("/_sim/calendars/alice@contoso.example/events")["events"]
        print("Graph holds in alice's calendar:")
        for ev in events:
            print(json.dumps({k: ev.get(k) for k in
                              ("subject", "start", "end", "originalStartTimeZone",
                               "attendees")},
                             indent=2, ensure_ascii=False))
    else:
        print("CalDAV did not take the event (status %s); see agent.log" % status)
