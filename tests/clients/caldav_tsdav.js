// Books, reads, moves and cancels one interview through the agent with
// tsdav, as Nextal's Node.js services would, and prints what each step saw
// as JSON. The account is built from the agent's URL scheme rather than
// discovered: the service credential is shared, the user is in the URL.
// Usage: node caldav_tsdav.js PORT USER PASS ADDRESS UID
'use strict';
const tsdav = require('tsdav');

function ics(uid, summary, start, end) {
  return [
    'BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:-//Nextal//tsdav scenario//EN',
    'BEGIN:VEVENT', `UID:${uid}`, 'DTSTAMP:20300101T000000Z',
    `DTSTART;TZID=America/Winnipeg:${start}`,
    `DTEND;TZID=America/Winnipeg:${end}`, `SUMMARY:${summary}`,
    'ATTENDEE;CN=Robin Candidate;ROLE=REQ-PARTICIPANT:mailto:robin@example.net',
    'END:VEVENT', 'END:VCALENDAR', '',
  ].join('\r\n');
}

async function main() {
  const [port, user, pass, address, uid] = process.argv.slice(2);
  const base = `http://127.0.0.1:${port}`;
  const headers = tsdav.getBasicAuthHeaders({ username: user, password: pass });
  const account = {
    accountType: 'caldav',
    serverUrl: `${base}/dav/`,
    rootUrl: `${base}/dav/`,
    principalUrl: `${base}/dav/principals/${address}/`,
    homeUrl: `${base}/dav/calendars/${address}/`,
  };
  const out = {};

  const calendars = await tsdav.fetchCalendars({ account, headers });
  out.calendars = calendars.map((c) => ({
    url: c.url, displayName: c.displayName, components: c.components,
    ctag: c.ctag,
  }));
  const calendar = calendars[0];

  const created = await tsdav.createCalendarObject({
    calendar, filename: `${uid}.ics`, headers,
    iCalString: ics(uid, 'Interview booked with tsdav', '20300310T090000',
                    '20300310T100000'),
  });
  out.created = { status: created.status, etag: created.headers.get('etag') };

  const window = { start: '2030-03-10T00:00:00Z', end: '2030-03-11T00:00:00Z' };
  let objects = await tsdav.fetchCalendarObjects({
    calendar, timeRange: window, headers,
  });
  let mine = objects.find((o) => o.data && o.data.includes(`UID:${uid}`));
  out.fetched = mine ? { url: mine.url, etag: mine.etag, data: mine.data } : null;

  const moved = {
    url: mine.url, etag: mine.etag,
    data: ics(uid, 'Interview moved with tsdav', '20300310T140000',
              '20300310T150000'),
  };
  const updated = await tsdav.updateCalendarObject({
    calendarObject: moved, headers,
  });
  out.updated = { status: updated.status, etag: updated.headers.get('etag') };

  const stale = await tsdav.updateCalendarObject({
    calendarObject: { ...moved, etag: mine.etag }, headers,
  });
  out.stale = { status: stale.status };

  const busy = await tsdav.freeBusyQuery({
    url: calendar.url, timeRange: window, headers,
  });
  out.freebusy = busy && busy.raw ? JSON.stringify(busy.raw) : JSON.stringify(busy);

  objects = await tsdav.fetchCalendarObjects({
    calendar, objectUrls: [mine.url], headers,
  });
  mine = objects[0];
  const deleted = await tsdav.deleteCalendarObject({
    calendarObject: mine, headers,
  });
  out.deleted = { status: deleted.status };
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err.stack || err.message);
  process.exit(1);
});
