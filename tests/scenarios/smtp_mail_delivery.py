#!/usr/bin/python3
"""Mail from Nextal to Outlook, end to end: messages submitted with
Python's smtplib arrive at Graph's sendMail for the linked user, with the
content and recipients the SMTP transaction asked for."""

import base64
import hashlib
import socket
import urllib.parse
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from scenario import ALICE, BOB, AgentTestCase, main


def rcpts_of(record):
    return sorted((r["type"], r["address"].lower()) for r in record["recipients"])


class MailDelivery(AgentTestCase):

    def test_plain_text(self):
        before = self.sent_count(ALICE)
        msg = EmailMessage()
        msg["From"] = "Alice Adams <%s>" % ALICE
        msg["To"] = "Jordan <jordan@example.net>"
        msg["Subject"] = "Your application"
        msg.set_content("Hello Jordan,\nthanks for applying.\n")
        self.send(ALICE, ["jordan@example.net"], msg.as_bytes())
        [record] = self.wait_one_more(ALICE, before)
        res = record["resource"]
        self.assertEqual(res["subject"], "Your application")
        self.assertEqual(res["body"]["contentType"].lower(), "text")
        self.assertIn("thanks for applying.", res["body"]["content"])
        self.assertEqual(rcpts_of(record), [("to", "jordan@example.net")])
        self.assertEqual(res["toRecipients"][0]["emailAddress"]["name"], "Jordan")
        self.assertTrue(record["savedToSentItems"])

    def test_html_with_inline_image(self):
        before = self.sent_count(ALICE)
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        cid = make_msgid(domain="nextal.example")
        msg = EmailMessage()
        msg["From"] = ALICE
        msg["To"] = "jordan@example.net"
        msg["Subject"] = "Our office"
        msg.set_content("See the map.")
        msg.add_alternative('<p>See the map: <img src="cid:%s"></p>' % cid[1:-1],
                            subtype="html")
        msg.get_payload()[1].add_related(png, "image", "png", cid=cid,
                                         filename="map.png")
        self.send(ALICE, ["jordan@example.net"], msg.as_bytes())
        [record] = self.wait_one_more(ALICE, before)
        res = record["resource"]
        self.assertEqual(res["body"]["contentType"].lower(), "html")
        self.assertIn("cid:" + cid[1:-1], res["body"]["content"])
        [att] = record["attachments"]
        self.assertTrue(att["isInline"])
        self.assertEqual(att["contentId"], cid[1:-1])
        self.assertEqual(att["sha256"], hashlib.sha256(png).hexdigest())

    def test_attachments_arrive_byte_identical(self):
        before = self.sent_count(ALICE)
        pdf = b"%PDF-1.4\n" + bytes(range(256)) * 300
        text = "Name;Score\nJordan;9\n".encode()
        msg = EmailMessage()
        msg["From"] = ALICE
        msg["To"] = "jordan@example.net"
        msg["Subject"] = "Documents"
        msg.set_content("Two files attached.")
        msg.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename="offer.pdf")
        msg.add_attachment(text, maintype="text", subtype="csv",
                           filename="scores.csv", cte="quoted-printable")
        self.send(ALICE, ["jordan@example.net"], msg.as_bytes())
        [record] = self.wait_one_more(ALICE, before)
        by_name = {a["name"]: a for a in record["attachments"]}
        self.assertEqual(set(by_name), {"offer.pdf", "scores.csv"})
        self.assertEqual(by_name["offer.pdf"]["sha256"], hashlib.sha256(pdf).hexdigest())
        self.assertEqual(by_name["offer.pdf"]["size"], len(pdf))
        self.assertEqual(by_name["scores.csv"]["sha256"], hashlib.sha256(text).hexdigest())
        self.assertFalse(by_name["offer.pdf"]["isInline"])

    def test_read_back_through_graphs_sent_items(self):
        # What the recruiter sees in Outlook: Graph's own Sent Items folder
        # holds the message, with its recipients and its attachment.
        before = self.sent_count(ALICE)
        pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
        msg = EmailMessage()
        msg["From"] = ALICE
        msg["To"] = "Jordan <jordan@example.net>"
        msg["Subject"] = "Offer letter"
        msg["Message-ID"] = make_msgid(domain="nextal.example")
        msg.set_content("Your offer is attached.")
        msg.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename="offer.pdf")
        self.send(ALICE, ["jordan@example.net", "hr@example.net"],
                  msg.as_bytes())
        self.wait_one_more(ALICE, before)
        box = "/v1.0/users/%s" % urllib.parse.quote(ALICE)
        found = self.box.graph_get(
            box + "/mailFolders/sentitems/messages?$filter=" + urllib.parse.quote(
                "internetMessageId eq '%s'" % msg["Message-ID"]))["value"]
        self.assertEqual(len(found), 1)
        item = found[0]
        self.assertEqual(item["subject"], "Offer letter")
        self.assertIn("Your offer is attached.", item["body"]["content"])
        self.assertEqual([r["emailAddress"]["address"] for r in item["toRecipients"]],
                         ["jordan@example.net"])
        self.assertEqual([r["emailAddress"]["address"] for r in item["bccRecipients"]],
                         ["hr@example.net"])
        self.assertEqual(item["from"]["emailAddress"]["address"].lower(), ALICE)
        atts = self.box.graph_get(
            box + "/messages/%s/attachments" % urllib.parse.quote(item["id"]))["value"]
        self.assertEqual([a["name"] for a in atts], ["offer.pdf"])
        self.assertEqual(base64.b64decode(atts[0]["contentBytes"]), pdf)

    def test_non_ascii_subject_and_names(self):
        before = self.sent_count(ALICE)
        msg = EmailMessage()
        msg["From"] = formataddr(("Alice Ådams", ALICE))
        msg["To"] = formataddr(("Zoë Çelik", "zoe@example.net"))
        msg["Subject"] = "Entretien d’embauche — José 面接"
        msg.set_content("Grüße aus Zürich — 日本語も大丈夫です。\n")
        self.send(ALICE, ["zoe@example.net"], msg.as_bytes())
        [record] = self.wait_one_more(ALICE, before)
        res = record["resource"]
        self.assertEqual(res["subject"], "Entretien d’embauche — José 面接")
        self.assertEqual(res["toRecipients"][0]["emailAddress"]["name"], "Zoë Çelik")
        self.assertIn("Grüße aus Zürich — 日本語も大丈夫です。", res["body"]["content"])

    def test_latin1_subject_encoded_word(self):
        before = self.sent_count(ALICE)
        subject = Header("Réunion à Genève", "iso-8859-1").encode()
        data = ("From: %s\r\nTo: x@example.net\r\nSubject: %s\r\n"
                "Content-Type: text/plain; charset=iso-8859-1\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n" % (ALICE, subject)).encode()
        data += "Café crème\r\n".encode("latin-1")
        self.send(ALICE, ["x@example.net"], data)
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(record["resource"]["subject"], "Réunion à Genève")
        self.assertIn("Café crème", record["resource"]["body"]["content"])

    def test_bcc_only_recipient(self):
        before = self.sent_count(ALICE)
        data = ("From: %s\r\nTo: undisclosed-recipients:;\r\nSubject: Bcc\r\n\r\n"
                "hidden\r\n" % ALICE).encode()
        self.send(ALICE, ["hidden@example.net"], data)
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(rcpts_of(record), [("bcc", "hidden@example.net")])

    def test_envelope_decides_who_receives(self):
        before = self.sent_count(ALICE)
        data = ("From: %s\r\nTo: Named <named@example.net>, "
                "Listed Only <listed-only@example.net>\r\n"
                "Cc: cc@example.net\r\nSubject: Envelope\r\n\r\nbody\r\n" % ALICE).encode()
        self.send(ALICE, ["named@example.net", "CC@example.net", "extra@example.net"], data)
        [record] = self.wait_one_more(ALICE, before)
        self.assertEqual(rcpts_of(record), [("bcc", "extra@example.net"),
                                            ("cc", "cc@example.net"),
                                            ("to", "named@example.net")])
        names = [r["emailAddress"]["name"] for r in record["resource"]["toRecipients"]]
        self.assertEqual(names, ["Named"])

    def test_dot_stuffed_lines(self):
        before = self.sent_count(ALICE)
        # smtplib stuffs leading dots itself; the agent must unstuff them.
        body = ".first line starts with a dot\r\n..two dots\r\n.\tdot tab\r\nend\r\n"
        data = ("From: %s\r\nTo: d@example.net\r\nSubject: dots\r\n\r\n" % ALICE) + body
        self.send(ALICE, ["d@example.net"], data.encode())
        [record] = self.wait_one_more(ALICE, before)
        content = record["resource"]["body"]["content"].replace("\r\n", "\n")
        # The whole body, line by line: an extra dot left on the first line
        # (or any other) must fail, which a substring check would not.
        self.assertEqual(content.rstrip("\n").split("\n"),
                         [".first line starts with a dot", "..two dots",
                          ".\tdot tab", "end"])

    def test_x_header_kept_other_custom_header_dropped(self):
        before = self.sent_count(ALICE)
        data = ("From: %s\r\nTo: h@example.net\r\nSubject: headers\r\n"
                "X-Nextal-Candidate: 4711\r\nX-Mailer-Thing: yes\r\n"
                "Organization-Custom: dropped\r\n\r\nbody\r\n" % ALICE).encode()
        self.send(ALICE, ["h@example.net"], data)
        [record] = self.wait_one_more(ALICE, before)
        headers = {h["name"].lower(): h["value"] for h in
                   record["resource"].get("internetMessageHeaders") or
                   record["raw_request"]["message"].get("internetMessageHeaders", [])}
        self.assertEqual(headers.get("x-nextal-candidate"), "4711")
        self.assertNotIn("organization-custom", headers)

    def test_queue_row_records_the_send(self):
        before = self.sent_count(BOB)
        with self.smtp() as client:
            client.mail(BOB)
            client.rcpt("q@example.net")
            code, reply = client.data(("From: %s\r\nTo: q@example.net\r\n"
                                       "Subject: q\r\n\r\nq\r\n" % BOB).encode())
        self.assertEqual(code, 250)
        queue_id = reply.decode().rsplit(" ", 1)[-1]
        self.wait_one_more(BOB, before)
        db = self.db()

        def state():
            row = db.execute("SELECT state, sender FROM messages WHERE queue_id = ?",
                             (queue_id,)).fetchone()
            return row if row and row[0] == "sent" else None
        from sandbox import wait_for
        self.assertEqual(wait_for(state, 10, "sent state"), ("sent", BOB))


if __name__ == "__main__":
    main()
