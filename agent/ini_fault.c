/* SPDX-License-Identifier: MIT */
/* The first problem of an INI file and its line (see include/ini_fault.h). */
#include "ini_fault.h"

#include <stdarg.h>
#include <stdio.h>

void ini_fault_set(struct ini_fault *fault, int line, const char *fmt, ...)
{
  va_list ap;

  if (fault->line != 0)
    return;
  fault->line = line;
  va_start(ap, fmt);
  vsnprintf(fault->text, sizeof(fault->text), fmt, ap);
  va_end(ap);
}

int ini_fault_inih(struct ini_fault *fault, int inih_line, const char *text)
{
  if (inih_line <= 0 || (fault->line != 0 && fault->line <= inih_line))
    return 0;
  fault->line = inih_line;
  snprintf(fault->text, sizeof(fault->text), "%s", text);
  return 1;
}
