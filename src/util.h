/*
 * util.h - small helpers shared by parflow's C files: intervals as
 * microseconds, text arrays, and the nearest-name hint.
 */
#ifndef PARFLOW_UTIL_H
#define PARFLOW_UTIL_H

#include "datatype/timestamp.h"
#include "utils/array.h"

extern int64 pf_interval_usec(const Interval *iv);
extern Interval *pf_usec_interval(int64 usec);
extern char **pf_text_array(ArrayType *arr, const char *what, int *n);
extern const char *pf_nearest(const char *word, char **candidates, int n);

#endif							/* PARFLOW_UTIL_H */
