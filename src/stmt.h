/*
 * stmt.h - SQL statements of the runtime core, prepared once per backend.
 */
#ifndef PARFLOW_STMT_H
#define PARFLOW_STMT_H

#include "executor/spi.h"

#define PF_STMT_MAXARGS 12

/*
 * One statement: its text and argument types, and its plan once prepared
 * (kept for the life of the backend; the plan cache re-plans it when the
 * tables it reads change, or are dropped and created again).  A statement
 * that locks with SKIP LOCKED runs so that it never waits long (see
 * pf_exec), in a subtransaction of its own, unless own_xid says that the
 * rows it writes must carry the caller's transaction id: write that
 * initializer with .own_xid = true.
 */
typedef struct PfStmt
{
	const char *sql;
	int			nargs;
	Oid			types[PF_STMT_MAXARGS];
	SPIPlanPtr	plan;
	bool		own_xid;
	int8		skip_wait;		/* pf_exec's: 0 not looked at yet, 1 yes, -1 no */
} PfStmt;

extern int	pf_exec(PfStmt *st, Datum *values, const char *nulls, long count);

/* Getters for column c (1-based) of row r of the last result. */
extern bool pf_isnull(int r, int c);
extern int64 pf_int8(int r, int c);
extern int32 pf_int4(int r, int c);
extern bool pf_bool(int r, int c);
extern Datum pf_datum(int r, int c, bool *isnull);
extern char *pf_text(int r, int c);

#endif							/* PARFLOW_STMT_H */
