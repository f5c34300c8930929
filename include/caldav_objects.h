/* SPDX-License-Identifier: MIT */
/* The CalDAV mapping table (caldav_objects, migrations 3, 8 and 9): for
 * each linked user, Nextal's object names and UIDs against Graph event ids,
 * the ETags last served, the zones the client wrote and the attendees it
 * schedules itself, and the tags derived from them. */
#ifndef NX_CALDAV_OBJECTS_H
#define NX_CALDAV_OBJECTS_H

#include "store.h"

/* Hex digits of a derived ETag, collection tag or adopted name. */
#define CALDAV_ETAG_HEX 32

/* One row: the object's name and UID, its Graph event id, the ETag last
 * served (NULL before the first), the TZIDs the client wrote DTSTART and
 * DTEND in, as written (NULL for UTC, floating and all-day times, and for
 * objects made in Outlook), and the master's ATTENDEEs the client schedules
 * itself, which Graph never sees. Every string is owned by the row;
 * caldav_row_clear() frees them. */
struct caldav_row {
  char *name;
  char *uid;
  char *event_id;
  char *etag;
  char *start_tzid;
  char *end_tzid;
  char *client_attendees; /* JSON array of the ATTENDEE lines of the last
                             PUT (ical_graph_result's client_attendees), or
                             NULL for none and for objects made in Outlook */
};

/* The etag column of an object whose create wrote the series but not yet
 * all its EXDATEs and overrides (a Graph failure or a crash in between): a
 * PUT with If-None-Match: * for the same name and UID completes it rather
 * than failing with 412. Never served: no real ETag has this form, and
 * caldav_row_set_etag() leaves it in place; only a finished PUT replaces
 * it. */
#define CALDAV_ETAG_INCOMPLETE "\"nextal-incomplete\""

/* Frees the strings of row and zeroes it; a zeroed row is a no-op. */
void caldav_row_clear(struct caldav_row *row);

/* Reads the row of address whose column key ("name", "uid" or "event_id",
 * never client text) equals value into row. Returns 0, -ENOENT or -EIO. */
int caldav_row_find(struct store *store, const char *address, const char *key,
                    const char *value, struct caldav_row *row);

/* Inserts or replaces the row of address named row->name. Returns 0 or
 * -EIO. */
int caldav_row_put(struct store *store, const char *address,
                   const struct caldav_row *row);

/* Reads the zones the client wrote the object of address that maps
 * event_id under uid in: *start_tzid and *end_tzid receive new strings
 * (free()) or NULL when none is remembered. Returns 0, -ENOENT or -EIO. */
int caldav_row_zones(struct store *store, const char *address, const char *uid,
                     const char *event_id, char **start_tzid, char **end_tzid);

/* Reads the client-scheduled ATTENDEE lines (a JSON array, see struct
 * caldav_row) remembered for the object of address that maps event_id:
 * *client_attendees receives a new string (free()) or NULL when none is
 * remembered. Returns 0, -ENOENT or -EIO. */
int caldav_row_client(struct store *store, const char *address,
                      const char *event_id, char **client_attendees);

/* Records the ETag last served for a name, unless the name is marked
 * CALDAV_ETAG_INCOMPLETE; a store error is logged. */
void caldav_row_set_etag(struct store *store, const char *address,
                         const char *name, const char *etag);

/* Forgets a name; a store error is logged. */
void caldav_row_delete(struct store *store, const char *address,
                       const char *name);

/* Makes an event that was not written through CalDAV (made in Outlook, or
 * an invitation the user received) an object of the calendar, named
 * "outlook-<digest of its event id>.ics", with Graph's iCalUId as UID. An
 * event already mapped keeps its row. Returns 0, or -EIO. */
int caldav_row_adopt(struct store *store, const char *address,
                     const char *event_id, const char *ical_uid);

/* Drops every other name of event_id: an adopted name of an event whose
 * PUT answer was lost and that its own name now maps again. */
void caldav_row_unalias(struct store *store, const char *address,
                        const char *name, const char *event_id);

/* Lists the rows of address by name, at most CALDAV_OBJECTS_MAX, into a
 * new array (caldav_rows_free()). Returns the count, or -EIO. */
int caldav_rows_list(struct store *store, const char *address,
                     struct caldav_row **out);

/* Frees n rows and the array. */
void caldav_rows_free(struct caldav_row *rows, int n);

/* The ETag of a Graph change key, a quoted string of hex digits so that it
 * never holds a character that needs care in a header. free() it. */
char *caldav_etag(const char *change_key);

/* The ETag of an object whose Graph side key derives (a change key, or
 * a series' digest input) and whose remembered client-scheduled attendees
 * are client_attendees: caldav_etag(key) when there are none, else a digest
 * of both, so that a PUT that changes only those attendees changes the
 * ETag even when Graph's event stays the same. free() it. */
char *caldav_object_etag(const char *key, const char *client_attendees);

/* The collection tag of rows: a digest of every name and ETag, so that any
 * create, change or delete the agent has seen changes it. free() it. */
char *caldav_ctag(const struct caldav_row *rows, int n);

#endif
