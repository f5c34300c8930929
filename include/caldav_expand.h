/* SPDX-License-Identifier: MIT */
/* Recurrence expansion for calendar-data <C:expand> (RFC 4791 9.6.5): a
 * series as the instances that fall in a window, overrides included. */
#ifndef NX_CALDAV_EXPAND_H
#define NX_CALDAV_EXPAND_H

#include <time.h>

/* Occurrences of one series expanded or compared, at most. */
#define CALDAV_OCCURRENCES_MAX 1000

/* The instances of the recurring object in text (an iCalendar stream)
 * that overlap [from, to), each a VEVENT with RECURRENCE-ID and UTC times,
 * without VTIMEZONEs; at most CALDAV_OCCURRENCES_MAX from the rule.
 * Returns a new string (free()), or NULL when text is not a series, which
 * is then sent as it is. */
char *caldav_expand(const char *text, time_t from, time_t to);

#endif
