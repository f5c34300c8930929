"""Mail part of the simulated Graph API: sendMail (JSON and MIME) and the
read side over the sender's Sent Items.

Routes (relative to /v1.0/users/{id} or /v1.0/me):
  POST sendMail                                  [G-SEND]
  GET  mailFolders/sentitems/messages            https://learn.microsoft.com/en-us/graph/api/mailfolder-list-messages
  GET  messages                                  https://learn.microsoft.com/en-us/graph/api/user-list-messages
  GET  messages/{id}                             https://learn.microsoft.com/en-us/graph/api/message-get
  GET  messages/{id}/attachments                 https://learn.microsoft.com/en-us/graph/api/message-list-attachments
  GET  messages/{id}/$value                      https://learn.microsoft.com/en-us/graph/outlook-get-mime-message
"""

import base64
import binascii
import email
import email.message
import email.policy
import email.utils
import hashlib
import re
import secrets
import urllib.parse

from simcore import Reply, graph_error, immutable_id, iso_z, json_reply, utcnow

ADDRESS_RE = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+$")
SENT_ITEMS_FOLDER_ID = "AQMkSentItemsFolderSim0000AAAAAAEJAAAA"
DEFAULT_PAGE = 10  # Outlook message lists default to 10 items per page [G-MSG list docs]


class MailError(Exception):
    """Raised by validators; carries the ready Graph error reply."""

    def __init__(self, reply):
        super().__init__(reply.status)
        self.reply = reply


def bad(req, code, message, status=400):
    return MailError(graph_error(status, code, message, req.request_id))


# ---------------------------------------------------------------------------
# routing table: (method, pattern) -> (operation name, handler, scopes)
# Delegated scopes required per https://learn.microsoft.com/en-us/graph/permissions-reference

READ_SCOPES = ("Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite")


def match(method, rest):
    """Return (op, handler, scopes) for a mailbox-relative path, or None."""
    n = len(rest)
    low = [s.lower() for s in rest]
    if method == "POST" and low == ["sendmail"]:
        return "sendMail", send_mail, ("Mail.Send",)
    if method == "GET" and n == 3 and low[0] == "mailfolders" and low[1] == "sentitems" \
            and low[2] == "messages":
        return "listMessages", list_messages, READ_SCOPES
    if method == "GET" and low == ["messages"]:
        return "listMessages", list_messages, READ_SCOPES
    if method == "GET" and n == 2 and low[0] == "messages":
        return "getMessage", get_message, READ_SCOPES
    if method == "GET" and n == 3 and low[0] == "messages" and low[2] == "attachments":
        return "listAttachments", list_attachments, READ_SCOPES
    if method == "GET" and n == 3 and low[0] == "messages" and low[2] == "$value":
        return "getMessageMime", get_mime, ("Mail.Read", "Mail.ReadWrite")
    return None


# ---------------------------------------------------------------------------
# sendMail

def send_mail(state, req, user, token, rest):
    ctype = req.content_type()
    try:
        if ctype == "text/plain":
            stored = parse_mime_request(req, user)
        else:
            stored = parse_json_request(req, user)
    except MailError as err:
        return err.reply
    record_sent(state, user, stored)
    # 202 Accepted with an empty body [G-SEND].
    return Reply(202, b"")


def parse_json_request(req, user, need_recipients=True):
    body = req.json()
    if not isinstance(body, dict):
        # Graph's wording for unreadable JSON payloads [obs, widely seen].
        raise bad(req, "BadRequest", "Unable to read JSON request payload. Please ensure "
                  "Content-Type header is set and payload is of valid JSON format.")
    msg = body.get("message")
    if not isinstance(msg, dict):
        raise bad(req, "ErrorInvalidParameter", "The value of the parameter 'Message' is "
                  "empty.")  # wording [unverified]
    save = body.get("saveToSentItems", True)
    # The doc example sends the string "false" [G-SEND].
    save = not (save is False or str(save).lower() == "false")
    recipients = collect_json_recipients(req, msg, need_recipients)
    if msg.get("from"):
        check_send_as(req, user, ((msg["from"] or {}).get("emailAddress") or {}).get("address"))
    headers = validate_headers(req, msg.get("internetMessageHeaders") or [])
    attachments = [decode_json_attachment(req, a) for a in msg.get("attachments") or []]
    imid = msg.get("internetMessageId") or generate_message_id()
    now = utcnow()
    resource = base_resource(user, now, imid)
    for key in ("subject", "importance", "isReadReceiptRequested",
                "isDeliveryReceiptRequested", "categories"):
        if key in msg:
            resource[key] = msg[key]
    body_obj = msg.get("body") or {"contentType": "text", "content": ""}
    resource["body"] = {"contentType": str(body_obj.get("contentType", "text")).lower(),
                        "content": body_obj.get("content", "")}
    resource["bodyPreview"] = preview(resource["body"]["content"])
    for field in ("toRecipients", "ccRecipients", "bccRecipients", "replyTo"):
        resource[field] = [normalise_recipient(r) for r in msg.get(field) or []]
    if msg.get("from"):
        resource["from"] = normalise_recipient(msg["from"])
    resource["internetMessageHeaders"] = headers
    resource["hasAttachments"] = any(not a["isInline"] for a in attachments)
    return {"resource": resource, "attachments": attachments, "save": save,
            "source": "json", "raw_request": body, "mime": None,
            "recipients": recipients}


def collect_json_recipients(req, msg, need_recipients=True):
    out = []
    for kind, field in (("to", "toRecipients"), ("cc", "ccRecipients"),
                        ("bcc", "bccRecipients")):
        for r in msg.get(field) or []:
            addr = ((r or {}).get("emailAddress") or {}).get("address", "")
            check_address(req, addr)
            out.append({"type": kind, "address": addr})
    if not out and need_recipients:
        raise no_recipients(req)
    return out


def no_recipients(req):
    # [obs] github.com/microsoftgraph/ruby-connect-rest-sample/issues/15 (graph-api.md §5)
    return bad(req, "ErrorInvalidRecipients", "At least one recipient isn't valid., A message "
               "can't be sent because it contains no recipients.")


def check_address(req, addr):
    if not ADDRESS_RE.match(addr or ""):
        # Only empty/unresolvable recipients fail fast [G-FLOW] (graph-api.md §5).
        raise bad(req, "ErrorInvalidRecipients", "At least one recipient isn't valid., "
                  "Recipient '%s' isn't resolved. All recipients must be resolved before a "
                  "message can be submitted." % addr)


def check_send_as(req, user, address):
    """`from` other than the mailbox needs Send As / on Behalf rights [G-OTHER]."""
    addr = (address or "").lower()
    if addr and addr != user.address and addr not in user.send_as:
        raise bad(req, "ErrorSendAsDenied", "The user account which was used to submit this "
                  "request does not have the right to send mail on behalf of the specified "
                  "sending account. Cannot submit message.", status=403)


def validate_headers(req, headers):
    """Only x-/X- names are accepted [obs] graph-api.md §2.2; status 400 [unverified]."""
    out = []
    for h in headers:
        name = str((h or {}).get("name", ""))
        if not name.lower().startswith("x-"):
            raise bad(req, "InvalidInternetMessageHeader", "The internet message header name "
                      "'%s' should start with 'x-' or 'X-'." % name)
        out.append({"name": name, "value": str(h.get("value", ""))})
    return out


def decode_json_attachment(req, att):
    """fileAttachment: name + contentBytes required, base64 content [G-FA]."""
    otype = att.get("@odata.type", "#microsoft.graph.fileAttachment")
    if otype.lower() != "#microsoft.graph.fileattachment":
        return attachment_record(att.get("name", ""), att.get("contentType"), b"",
                                 bool(att.get("isInline")), att.get("contentId"), otype)
    if not att.get("name") or "contentBytes" not in att:
        raise bad(req, "ErrorRequiredPropertyMissing", "Required property is missing: %s."
                  % ("name" if not att.get("name") else "contentBytes"))  # code [unverified]
    try:
        data = base64.b64decode(str(att["contentBytes"]), validate=True)
    except (binascii.Error, ValueError):
        # OData reports undecodable Edm.Binary as RequestBodyRead [unverified].
        raise bad(req, "RequestBodyRead", "Cannot convert the literal '%s' to the expected "
                  "type 'Edm.Binary'." % str(att["contentBytes"])[:40])
    return attachment_record(att["name"], att.get("contentType") or "application/octet-stream",
                             data, bool(att.get("isInline", False)), att.get("contentId"), otype)


def attachment_record(name, ctype, data, inline, cid, otype="#microsoft.graph.fileAttachment"):
    return {"id": immutable_id(), "name": name, "contentType": ctype, "data": data,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "isInline": inline, "contentId": cid, "odataType": otype}


def parse_mime_request(req, user):
    """MIME form: the body is base64 of an RFC 5322 message [G-SEND] [G-MIME]."""
    text = req.body.strip()
    compact = re.sub(rb"\s+", b"", text)
    try:
        if not compact:
            raise binascii.Error("empty")
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise bad(req, "ErrorMimeContentInvalidBase64String",
                  "Invalid base64 string for MIME content.")  # [G-SEND]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if not msg.keys():
        # Malformed or empty MIME -> 400 [G-MIME]; code name [unverified].
        raise bad(req, "ErrorMimeContentInvalid", "The MIME content is invalid.")
    recipients = []
    resource_recips = {}
    for kind, header, field in (("to", "To", "toRecipients"), ("cc", "Cc", "ccRecipients"),
                                ("bcc", "Bcc", "bccRecipients")):
        pairs = email.utils.getaddresses([str(v) for v in msg.get_all(header, [])])
        resource_recips[field] = []
        for name, addr in pairs:
            if not addr and not name:
                continue
            check_address(req, addr)
            recipients.append({"type": kind, "address": addr})
            resource_recips[field].append({"emailAddress": {"name": name or addr,
                                                            "address": addr}})
    if not recipients:
        raise no_recipients(req)
    imid = str(msg.get("Message-ID", "")).strip() or generate_message_id()
    resource = base_resource(user, utcnow(), imid)
    resource.update(resource_recips)
    resource["subject"] = str(msg.get("Subject", ""))
    body_part = msg.get_body(preferencelist=("html", "plain"))
    content = body_part.get_content() if body_part is not None else ""
    ctype = "html" if body_part is not None and body_part.get_content_subtype() == "html" \
        else "text"
    resource["body"] = {"contentType": ctype, "content": content}
    resource["bodyPreview"] = preview(content)
    from_pairs = email.utils.getaddresses([str(v) for v in msg.get_all("From", [])])
    if from_pairs and from_pairs[0][1]:
        check_send_as(req, user, from_pairs[0][1])
        resource["from"] = {"emailAddress": {"name": from_pairs[0][0] or from_pairs[0][1],
                                             "address": from_pairs[0][1]}}
    resource["internetMessageHeaders"] = [{"name": k, "value": str(v)} for k, v in msg.items()]
    attachments = mime_attachments(msg, body_part)
    resource["hasAttachments"] = any(not a["isInline"] for a in attachments)
    calendar = calendar_parts(msg)
    if calendar:
        # Exchange turns a text/calendar METHOD:REQUEST part into a meeting
        # request (eventMessage) rather than a file [G-MSG, meetingMessageType].
        kinds = {"REQUEST": "meetingRequest", "CANCEL": "meetingCancelled"}
        resource["meetingMessageType"] = kinds.get(calendar[0]["method"], "none")
    return {"resource": resource, "attachments": attachments, "save": True,
            "source": "mime", "raw_request": raw.decode("utf-8", "replace"), "mime": raw,
            "recipients": recipients, "calendar": calendar}


def calendar_parts(msg):
    """text/calendar parts that are not plain file attachments (iMIP)."""
    out = []
    for part in msg.walk():
        if part.get_content_type() != "text/calendar" or \
                part.get_content_disposition() == "attachment":
            continue
        method = (part.get_param("method") or "").upper()
        out.append({"method": method, "content": part.get_content()})
    return out


def mime_attachments(msg, body_part):
    out = []
    for part in msg.walk():
        if part.is_multipart() or part is body_part:
            continue
        disp = part.get_content_disposition()
        cid = part.get("Content-ID")
        if disp is None and cid is None:
            continue  # alternative body parts
        data = part.get_payload(decode=True) or b""
        name = part.get_filename() or ""
        cid_clean = str(cid).strip().strip("<>") if cid else None
        out.append(attachment_record(name, part.get_content_type(), data,
                                     disp == "inline" or (disp is None and cid is not None),
                                     cid_clean))
    return out


def normalise_recipient(r):
    ea = (r or {}).get("emailAddress") or {}
    return {"emailAddress": {"name": ea.get("name") or ea.get("address", ""),
                             "address": ea.get("address", "")}}


def preview(content):
    text = re.sub(r"<[^>]*>", " ", content or "")
    return re.sub(r"\s+", " ", text).strip()[:255]


def generate_message_id():
    """Exchange-style Message-ID (shape only) [G-MSG internetMessageId]."""
    return "<%s@SIMPR01MB%04d.namprd00.prod.outlook.com>" % (
        secrets.token_hex(16).upper(), secrets.randbelow(10000))


def base_resource(user, now, imid):
    """Fields of a message resource in Sent Items [G-MSG]."""
    change_key = base64.b64encode(secrets.token_bytes(15)).decode()
    sender = {"emailAddress": {"name": user.display_name, "address": user.address}}
    return {
        "@odata.etag": 'W/"%s"' % change_key,
        "id": immutable_id(), "createdDateTime": iso_z(now), "lastModifiedDateTime": iso_z(now),
        "changeKey": change_key, "categories": [], "receivedDateTime": iso_z(now),
        "sentDateTime": iso_z(now), "hasAttachments": False, "internetMessageId": imid,
        "subject": "", "bodyPreview": "", "importance": "normal",
        "parentFolderId": SENT_ITEMS_FOLDER_ID, "conversationId": immutable_id(),
        "conversationIndex": base64.b64encode(secrets.token_bytes(22)).decode(),
        "isDeliveryReceiptRequested": False, "isReadReceiptRequested": False, "isRead": True,
        "isDraft": False, "webLink": "https://outlook.office365.com/owa/?ItemID=sim",
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": ""},
        "sender": sender, "from": sender, "toRecipients": [], "ccRecipients": [],
        "bccRecipients": [], "replyTo": [], "flag": {"flagStatus": "notFlagged"},
    }


def record_sent(state, user, stored):
    stored["sender"] = user.address
    stored["accepted_at"] = iso_z(frac=True)
    with state.lock:
        state.mail.setdefault(user.address, []).append(stored)
        for r in stored["recipients"]:
            state.deliveries.append({"from": user.address, "to": r["address"],
                                     "type": r["type"], "message_id": stored["resource"]["id"],
                                     "internetMessageId": stored["resource"]["internetMessageId"],
                                     "time": stored["accepted_at"]})
        state.stats.bucket(user.address)["sendmail_accepted"] += 1


# ---------------------------------------------------------------------------
# read side

def saved_messages(state, user):
    with state.lock:
        return [m for m in state.mail.get(user.address, []) if m["save"]]


def find_message(state, user, mid):
    for m in saved_messages(state, user):
        if m["resource"]["id"] == mid:  # ids are case-sensitive [G-IMM]
            return m
    with state.lock:
        return state.drafts.get(user.address, {}).get(mid)


def attachment_resource(a, with_bytes=True):
    """fileAttachment resource [G-FA]."""
    res = {"@odata.type": a["odataType"], "@odata.mediaContentType": a["contentType"],
           "id": a["id"], "lastModifiedDateTime": iso_z(), "name": a["name"],
           "contentType": a["contentType"], "size": a["size"], "isInline": a["isInline"],
           "contentId": a["contentId"], "contentLocation": None}
    if with_bytes:
        res["contentBytes"] = base64.b64encode(a["data"]).decode("ascii")
    return res


def render_message(stored, select=None, expand=False):
    res = dict(stored["resource"])
    res.pop("internetMessageHeaders", None)  # only returned when $select-ed [G-MSG]
    if select:
        wanted = {"id", "@odata.etag"} | set(select)
        res = {k: v for k, v in stored["resource"].items() if k in wanted}
    if expand:
        res["attachments"] = [attachment_resource(a) for a in stored["attachments"]]
    return res


FILTER_RE = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$")


def parse_filter(expr):
    """Loose OData $filter: `prop eq 'v'` joined by `and`."""
    clauses = []
    for part in re.split(r"\s+and\s+", expr):
        m = FILTER_RE.match(part)
        if not m:
            return None
        clauses.append((m.group(1), m.group(2).replace("''", "'")))
    return clauses


def list_messages(state, req, user, token, rest):
    q = req.query
    msgs = saved_messages(state, user)
    if q.get("$filter"):
        clauses = parse_filter(q["$filter"])
        if clauses is None:
            return graph_error(400, "ErrorInvalidUrlQueryFilter", "The query filter contains "
                               "one or more invalid nodes.", req.request_id)
        msgs = [m for m in msgs
                if all(str(m["resource"].get(k)) == v for k, v in clauses)]
    msgs = sorted(msgs, key=lambda m: m["accepted_at"], reverse=True)
    try:
        top = int(q.get("$top", DEFAULT_PAGE))
        skip = int(q.get("$skip", 0))
    except ValueError:
        return graph_error(400, "BadRequest", "Invalid $top or $skip value.", req.request_id)
    select = [s.strip() for s in q["$select"].split(",")] if q.get("$select") else None
    expand = "attachments" in (q.get("$expand") or "")
    page = msgs[skip:skip + top]
    body = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('%s')/messages"
            % user.address,
            "value": [render_message(m, select, expand) for m in page]}
    if skip + top < len(msgs):
        params = dict(q)
        params["$skip"] = str(skip + top)
        params["$top"] = str(top)
        body["@odata.nextLink"] = "%s%s?%s" % (req.base_url, req.path,
                                                urllib.parse.urlencode(params))
    return json_reply(200, body)


def item_not_found(req):
    # [obs] graph-api.md §5 ErrorItemNotFound
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the "
                       "store.", req.request_id)


def get_message(state, req, user, token, rest):
    m = find_message(state, user, rest[1])
    if m is None:
        return item_not_found(req)
    q = req.query
    select = [s.strip() for s in q["$select"].split(",")] if q.get("$select") else None
    return json_reply(200, render_message(m, select, "attachments" in (q.get("$expand") or "")))


def list_attachments(state, req, user, token, rest):
    m = find_message(state, user, rest[1])
    if m is None:
        return item_not_found(req)
    return json_reply(200, {"value": [attachment_resource(a) for a in m["attachments"]]})


def get_mime(state, req, user, token, rest):
    m = find_message(state, user, rest[1])
    if m is None:
        return item_not_found(req)
    raw = m["mime"] if m["mime"] is not None else synthesise_mime(m)
    return Reply(200, raw, None, "text/plain")


def synthesise_mime(stored):
    """Build a plausible MIME rendering of a JSON-sent message."""
    res = stored["resource"]
    msg = email.message.EmailMessage()

    def fmt(lst):
        return ", ".join(email.utils.formataddr((r["emailAddress"]["name"],
                                                 r["emailAddress"]["address"])) for r in lst)
    msg["From"] = fmt([res["from"]])
    if res["toRecipients"]:
        msg["To"] = fmt(res["toRecipients"])
    if res["ccRecipients"]:
        msg["Cc"] = fmt(res["ccRecipients"])
    msg["Subject"] = res.get("subject") or ""
    msg["Date"] = email.utils.format_datetime(utcnow())
    msg["Message-ID"] = res["internetMessageId"]
    for h in res.get("internetMessageHeaders") or []:
        msg[h["name"]] = h["value"]
    subtype = "html" if res["body"]["contentType"] == "html" else "plain"
    msg.set_content(res["body"]["content"] or "", subtype=subtype)
    for a in stored["attachments"]:
        maintype, _, sub = (a["contentType"] or "application/octet-stream").partition("/")
        msg.add_attachment(a["data"], maintype=maintype, subtype=sub or "octet-stream",
                           filename=a["name"], cid=("<%s>" % a["contentId"]) if a["contentId"]
                           else None, disposition="inline" if a["isInline"] else "attachment")
    return msg.as_bytes(policy=email.policy.SMTP)


def sim_view(stored):
    """Full record for GET /_sim/mailboxes/{address}/sent."""
    return {
        "resource": stored["resource"],
        "source": stored["source"],
        "raw_request": stored["raw_request"],
        "savedToSentItems": stored["save"],
        "recipients": stored["recipients"],
        "accepted_at": stored.get("accepted_at"),  # None for a draft
        "calendar": stored.get("calendar") or [],
        "attachments": [{"name": a["name"], "contentType": a["contentType"],
                         "size": a["size"], "sha256": a["sha256"], "contentId": a["contentId"],
                         "isInline": a["isInline"], "id": a["id"],
                         "chunks": a.get("chunks", 0)}
                        for a in stored["attachments"]],
    }
