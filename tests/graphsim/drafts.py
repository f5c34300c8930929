"""Large mail in the simulated Graph API: drafts, small attachments, upload
sessions and send [G-LARGE] [G-CUS] [G-MSEND] (graph-api.md section 2.4).

Routes (relative to /v1.0/users/{id} or /v1.0/me):
  POST   messages                                   create a draft (JSON) -> 201
  POST   messages/{id}/attachments                  fileAttachment under 3 MB -> 201
  POST   messages/{id}/attachments/createUploadSession  3 MB..150 MB -> 201
  POST   messages/{id}/send                         202; the draft moves to Sent Items
  DELETE messages/{id}                              204 (drafts only)
  GET    messages/{id}/attachments                  with $select, $top, $skip
Upload URL (no Authorization header; pre-authenticated by its authtoken):
  PUT    /api/v2.0/Users('{uid}')/Messages('{mid}')/AttachmentSessions('{sid}')?authtoken=...

Chunk rules: each PUT carries at most 4 MB, in order ("iteratively upload
ranges of bytes (up to 4 MB each time)", learn.microsoft.com/en-us/graph/api/
attachment-createuploadsession). The 320 KiB-multiple rule is documented for
OneDrive upload sessions only (learn.microsoft.com/en-us/graph/api/
driveitem-createuploadsession, "Upload bytes to the upload session"), not for
Outlook attachments; the simulator applies it anyway when the config key
`upload_chunk_alignment` is true (the default), so that a client that passes
here passes under either reading.
"""

import re
import secrets
import time
import urllib.parse

import faults
import mail
from simcore import Reply, graph_error, immutable_id, iso_z, json_reply, utcnow

MIB = 1024 * 1024
SMALL_ATTACHMENT_MAX = 3 * MIB          # single POST under 3 MB [G-ATT]
UPLOAD_MIN = 3 * MIB                    # upload sessions: 3 MB .. 150 MB [G-LARGE]
UPLOAD_MAX = 150 * MIB
CHUNK_MAX = 4 * MIB                     # "up to 4 MB each time" [G-CUS]
CHUNK_ALIGN = 320 * 1024                # driveItem rule, applied conservatively
DEFAULT_MESSAGE_SIZE_LIMIT = 35 * MIB   # EXO default per mailbox [G-CUS]
DRAFTS_FOLDER_ID = "AQMkDraftsFolderSim0000AAAAAAEPAAAA"
RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def install(graphapi, control):
    module = __import__(__name__)
    graphapi.register(module)
    # Ahead of mail.py, whose listing of attachments ignores the query.
    graphapi.OPERATION_MODULES.remove(module)
    graphapi.OPERATION_MODULES.insert(0, module)
    control.EXTRA_ROUTES.append(("GET", "drafts", sim_get_drafts))
    control.EXTRA_ROUTES.append(("POST", "limits", sim_set_limits))


def sim_get_drafts(state, req, segs, body):
    """GET /_sim/drafts/{address}: drafts not sent yet, with attachments."""
    if len(segs) != 2:
        return json_reply(404, {"error": "not_found", "path": "GET /_sim/drafts/{address}"})
    return json_reply(200, {"mailbox": segs[1].lower(),
                            "drafts": sim_drafts(state, segs[1].lower())})


def sim_set_limits(state, req, segs, body):
    """POST /_sim/limits {"max_message_size": bytes}: the mailbox size limit."""
    with state.lock:
        if "max_message_size" in body:
            state.max_message_size = int(body["max_message_size"])
        return json_reply(200, {"max_message_size": size_limit(state, None)})


def match(method, rest):
    """Return (op, handler, scopes) for the draft routes, or None."""
    n = len(rest)
    low = [s.lower() for s in rest]
    rw = ("Mail.ReadWrite",)
    if method == "POST" and low == ["messages"]:
        return "createMessage", create_draft, rw
    if method == "POST" and n == 3 and low[0] == "messages" and low[2] == "attachments":
        return "addAttachment", add_attachment, rw
    if method == "POST" and n == 4 and low[0] == "messages" and low[2] == "attachments" \
            and low[3] == "createuploadsession":
        return "createUploadSession", create_upload_session, rw
    if method == "POST" and n == 3 and low[0] == "messages" and low[2] == "send":
        return "sendDraft", send_draft, ("Mail.Send",)
    if method == "DELETE" and n == 2 and low[0] == "messages":
        return "deleteMessage", delete_draft, rw
    if method == "GET" and n == 3 and low[0] == "messages" and low[2] == "attachments":
        return "listAttachments", list_attachments, mail.READ_SCOPES
    return None


def size_limit(state, user):
    """One limit for every mailbox: config `max_message_size`, changed at run
    time by POST /_sim/limits."""
    if getattr(state, "max_message_size", None):
        return state.max_message_size
    return int(state.config.raw.get("max_message_size", DEFAULT_MESSAGE_SIZE_LIMIT))


def message_size(stored):
    """Item size as the store counts it: body text plus attachment bytes."""
    body = stored["resource"].get("body", {}).get("content", "") or ""
    return len(body.encode("utf-8")) + sum(a["size"] for a in stored["attachments"])


def too_big(req):
    # [obs] graph-api.md 2.3: ErrorMessageSizeExceeded, 400.
    return graph_error(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum "
                       "supported size., Cannot save changes made to an item to store.",
                       req.request_id)


def drafts_of(state, user):
    return state.drafts.setdefault(user.address, {})


def sessions_of(state):
    return state.upload_sessions


def find_draft(state, user, mid):
    with state.lock:
        return drafts_of(state, user).get(mid)


def create_draft(state, req, user, token, rest):
    """POST /messages: the body is the message itself, not wrapped [G-LARGE]."""
    msg = req.json()
    if not isinstance(msg, dict):
        return graph_error(400, "BadRequest", "Unable to read JSON request payload.",
                           req.request_id)
    try:
        stored = mail.parse_json_request(_Wrapped(req, msg), user, need_recipients=False)
    except mail.MailError as err:
        return err.reply
    stored["source"] = "draft"
    stored["raw_request"] = msg
    res = stored["resource"]
    res["isDraft"] = True
    res["parentFolderId"] = DRAFTS_FOLDER_ID
    if message_size(stored) > size_limit(state, user):
        return too_big(req)
    with state.lock:
        drafts_of(state, user)[res["id"]] = stored
    return json_reply(201, mail.render_message(stored))


class _Wrapped:
    """A request whose JSON is {"message": msg}, for the sendMail parser."""

    def __init__(self, req, msg):
        self._req = req
        self._msg = msg
        self.request_id = req.request_id

    def json(self):
        return {"message": self._msg, "saveToSentItems": True}


def add_attachment(state, req, user, token, rest):
    stored = find_draft(state, user, rest[1])
    if stored is None:
        return mail.item_not_found(req)
    att = req.json()
    if not isinstance(att, dict):
        return graph_error(400, "BadRequest", "Unable to read JSON request payload.",
                           req.request_id)
    try:
        rec = mail.decode_json_attachment(req, att)
    except mail.MailError as err:
        return err.reply
    if rec["size"] >= SMALL_ATTACHMENT_MAX:
        # Over 3 MB needs an upload session [G-ATT]; code and status [unverified].
        return graph_error(413, "RequestEntityTooLarge", "Attachments of 3 MB or more must "
                           "be uploaded with an upload session.", req.request_id)
    with state.lock:
        if message_size(stored) + rec["size"] > size_limit(state, user):
            return too_big(req)
        stored["attachments"].append(rec)
        stored["resource"]["hasAttachments"] = any(not a["isInline"]
                                                   for a in stored["attachments"])
    return json_reply(201, mail.attachment_resource(rec, with_bytes=False))


def create_upload_session(state, req, user, token, rest):
    stored = find_draft(state, user, rest[1])
    if stored is None:
        return mail.item_not_found(req)
    body = req.json() or {}
    item = body.get("AttachmentItem") if isinstance(body, dict) else None
    if not isinstance(item, dict) or item.get("attachmentType") != "file" \
            or not item.get("name") or not isinstance(item.get("size"), int):
        return graph_error(400, "ErrorInvalidRequest", "AttachmentItem needs attachmentType "
                           "file, name and size.", req.request_id)  # wording [unverified]
    size = item["size"]
    if size < UPLOAD_MIN:
        # [G-LARGE] graph-api.md 2.4 step 2.
        return graph_error(400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                           "Attachment size must be greater than the minimum size.",
                           req.request_id)
    if size > UPLOAD_MAX or message_size(stored) + size > size_limit(state, user):
        return too_big(req)
    sid = immutable_id()
    auth = secrets.token_urlsafe(24)
    expires = iso_z(frac=True)
    with state.lock:
        sessions_of(state)[sid] = {
            "address": user.address, "draft_id": rest[1], "name": item["name"],
            "size": size, "contentType": item.get("contentType") or "application/octet-stream",
            "isInline": bool(item.get("isInline", False)), "contentId": item.get("contentId"),
            "data": bytearray(), "authtoken": auth, "client_id": token["client_id"],
            "chunks": 0,
        }
    url = "%s/api/v2.0/Users('%s')/Messages('%s')/AttachmentSessions('%s')?authtoken=%s" % (
        req.base_url, urllib.parse.quote(user.id), urllib.parse.quote(rest[1]),
        urllib.parse.quote(sid), auth)
    return json_reply(201, {"@odata.context": "https://graph.microsoft.com/v1.0/"
                            "$metadata#microsoft.graph.uploadSession",
                            "uploadUrl": url, "expirationDateTime": expires,
                            "nextExpectedRanges": ["0-"]})


SESSION_PATH_RE = re.compile(r"^/api/v2\.0/Users\('([^']*)'\)/Messages\('([^']*)'\)/"
                             r"AttachmentSessions\('([^']*)'\)$")


def handle_upload(state, req):
    """PUT {uploadUrl}: one ordered chunk [G-CUS]. Returns None if not ours."""
    m = SESSION_PATH_RE.match(req.path)
    if m is None:
        return None
    with state.lock:
        sess = sessions_of(state).get(m.group(3))
    if sess is None:
        return graph_error(404, "ErrorItemNotFound", "The upload session was not found.",
                           req.request_id)
    if req.method == "DELETE":
        with state.lock:
            sessions_of(state).pop(m.group(3), None)
        return Reply(204, b"")
    if req.method != "PUT":
        return graph_error(405, "ErrorInvalidRequest", "Upload URLs take PUT.", req.request_id)
    if req.headers.get("Authorization"):
        # The URL is pre-authenticated; a bearer token is refused [G-LARGE].
        return graph_error(401, "InvalidAuthenticationToken", "Do not send an Authorization "
                           "header with an upload URL.", req.request_id)
    if req.query.get("authtoken") != sess["authtoken"]:
        return graph_error(401, "InvalidAuthenticationToken", "authtoken is invalid.",
                           req.request_id)
    mailbox = sess["address"]
    with faults.InFlight(state, sess["client_id"], mailbox) as gate:
        if not gate.admitted:
            return faults.concurrency_reply(req.request_id, state.throttle_retry_after)
        if state.latency_ms:
            time.sleep(state.latency_ms / 1000.0)
        rule = faults.pick_fault(state, mailbox, "uploadChunk", sess["client_id"], after=False)
        if rule:
            faults.record_injected(state, mailbox, rule)
            return faults.fault_reply(rule, req.request_id)
        reply = put_chunk(state, req, sess, m.group(3))
        rule = faults.pick_fault(state, mailbox, "uploadChunk", sess["client_id"], after=True)
        if rule:
            faults.record_injected(state, mailbox, rule)
            return faults.fault_reply(rule, req.request_id)
        return reply


def bad_range(req, why):
    # Status and code for a wrong range [unverified]; Graph documents none.
    return graph_error(416, "InvalidRange", why, req.request_id)


def put_chunk(state, req, sess, sid):
    rng = RANGE_RE.match((req.headers.get("Content-Range") or "").strip())
    if rng is None:
        return bad_range(req, "Content-Range must be 'bytes start-end/total'.")
    start, end, total = (int(x) for x in rng.groups())
    data = req.body
    with state.lock:
        have = len(sess["data"])
        if total != sess["size"]:
            return bad_range(req, "The total does not match the session's size.")
        if start != have:
            return bad_range(req, "Expected the range to start at %d." % have)
        if end < start or end - start + 1 != len(data) or end >= total:
            return bad_range(req, "The range does not match the body length.")
        if len(data) > CHUNK_MAX:
            return bad_range(req, "A chunk may carry at most 4 MB.")
        last = end + 1 == total
        if state.config.raw.get("upload_chunk_alignment", True) and not last \
                and len(data) % CHUNK_ALIGN != 0:
            return bad_range(req, "Chunks other than the last must be a multiple of "
                             "320 KiB.")
        sess["data"] += data
        sess["chunks"] += 1
        if not last:
            return json_reply(200, {"expirationDateTime": iso_z(frac=True),
                                    "nextExpectedRanges": [str(end + 1)]})
        sessions_of(state).pop(sid, None)
        user = state.users[sess["address"]]
        stored = drafts_of(state, user).get(sess["draft_id"])
        if stored is None:
            return mail.item_not_found(req)
        rec = mail.attachment_record(sess["name"], sess["contentType"], bytes(sess["data"]),
                                     sess["isInline"], sess["contentId"])
        rec["chunks"] = sess["chunks"]
        stored["attachments"].append(rec)
        stored["resource"]["hasAttachments"] = any(not a["isInline"]
                                                   for a in stored["attachments"])
    loc = "https://outlook.office.com/api/v2.0/Users('%s')/Messages('%s')/Attachments('%s')" \
        % (user.id, sess["draft_id"], rec["id"])
    return Reply(201, b"", [("Location", loc)])


def send_draft(state, req, user, token, rest):
    """POST /messages/{id}/send -> 202; the draft goes to Sent Items [G-MSEND]."""
    with state.lock:
        stored = drafts_of(state, user).get(rest[1])
    if stored is None:
        return mail.item_not_found(req)
    recipients = []
    res = stored["resource"]
    for kind, field in (("to", "toRecipients"), ("cc", "ccRecipients"),
                        ("bcc", "bccRecipients")):
        for r in res.get(field) or []:
            recipients.append({"type": kind, "address": r["emailAddress"]["address"]})
    if not recipients:
        return mail.no_recipients(req).reply
    if message_size(stored) > size_limit(state, user):
        return too_big(req)
    with state.lock:
        if drafts_of(state, user).pop(rest[1], None) is None:
            return mail.item_not_found(req)
    res["isDraft"] = False
    res["parentFolderId"] = mail.SENT_ITEMS_FOLDER_ID
    res["sentDateTime"] = iso_z(utcnow())
    stored["recipients"] = recipients
    mail.record_sent(state, user, stored)
    return Reply(202, b"")


def delete_draft(state, req, user, token, rest):
    with state.lock:
        if drafts_of(state, user).pop(rest[1], None) is None:
            return mail.item_not_found(req)
    return Reply(204, b"")


def query_list(req, name):
    text = req.query.get(name)
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def list_attachments(state, req, user, token, rest):
    """GET messages/{id}/attachments. List attachments "supports the OData
    query parameters to help customize the response"
    (learn.microsoft.com/en-us/graph/api/message-list-attachments,
    "Optional query parameters"): with $select only the named properties
    come back (plus id and @odata.type), so `$select=id,name,size` leaves
    out contentBytes, which a full listing carries for every file. $top and
    $skip page the list, with an @odata.nextLink while more remain."""
    m = mail.find_message(state, user, rest[1])
    if m is None:
        return mail.item_not_found(req)
    select = query_list(req, "$select")
    try:
        skip = int(req.query.get("$skip", 0))
        top = int(req.query["$top"]) if "$top" in req.query else None
    except ValueError:
        return graph_error(400, "BadRequest", "Invalid $top or $skip value.", req.request_id)
    with state.lock:
        items = list(m["attachments"])
    end = len(items) if top is None else skip + top
    value = []
    for a in items[skip:end]:
        res = mail.attachment_resource(a, with_bytes=not select
                                       or "contentBytes" in select)
        if select:
            wanted = {"@odata.type", "id"} | set(select)
            res = {k: v for k, v in res.items() if k in wanted}
        value.append(res)
    body = {"value": value}
    if end < len(items):
        params = dict(req.query)
        params["$skip"] = str(end)
        body["@odata.nextLink"] = "%s%s?%s" % (req.base_url, req.path,
                                                urllib.parse.urlencode(params))
    return json_reply(200, body)


def sim_drafts(state, address):
    with state.lock:
        drafts = list(state.drafts.get(address, {}).values())
    return [mail.sim_view(d) for d in drafts]
