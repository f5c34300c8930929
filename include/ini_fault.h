/* SPDX-License-Identifier: MIT */
/* The first thing wrong in an INI file read with inih, with its line: the
 * configuration and the policy file both name one problem, the earliest,
 * which is the one a person should look at first. */
#ifndef NX_INI_FAULT_H
#define NX_INI_FAULT_H

struct ini_fault {
  int line;       /* first line refused; 0 if none */
  char text[256]; /* what is wrong on that line */
};

/* Records a problem on line unless an earlier one is recorded: inih goes
 * on after a handler refuses a line, so later calls keep the first. */
void ini_fault_set(struct ini_fault *fault, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Takes inih's own answer (the first line it could not read as a section,
 * a key = value line or a comment, or 0) with text for it, when it is
 * earlier than what the handlers recorded. Returns whether it did. */
int ini_fault_inih(struct ini_fault *fault, int inih_line, const char *text);

#endif
