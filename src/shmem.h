/*
 * shmem.h - the shared state between backends and the dispatcher, and the
 * commit-time wake-up.
 */
#ifndef PARFLOW_SHMEM_H
#define PARFLOW_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/*
 * A dispatch notification that a committing transaction hands to the
 * dispatcher to send (see pf_note_at_commit): the channel and payload of one
 * NOTIFY, and the transaction, which must have committed before it is sent.
 */
#define PF_NOTE_CHANNEL 64		/* NAMEDATALEN: "parflow_" and a 55-byte agent */
#define PF_NOTE_PAYLOAD 1024	/* {"kind": ..., "task": ..., "stage": ...} */
#define PF_NOTE_RING 256		/* notes waiting for the dispatcher */

typedef struct PfNote
{
	TransactionId xid;			/* send only once this has committed */
	char		channel[PF_NOTE_CHANNEL];
	char		payload[PF_NOTE_PAYLOAD];
} PfNote;

typedef struct PfShared
{
	pid_t		dispatcher_pid; /* 0 when no dispatcher runs */
	Latch	   *dispatcher_latch;	/* its latch, set to wake it */
	Oid			dispatcher_db;	/* the database it serves, once connected */
	pg_atomic_uint32 pass_wanted;	/* a commit asked for a dispatch pass */
	pg_atomic_uint64 passes;	/* dispatch passes done since start */
	pg_atomic_uint64 notes_sent;	/* notes the dispatcher has sent */

	/* notes from committing transactions, sent by the dispatcher */
	LWLock	   *note_lock;		/* protects the fields below */
	uint32		note_head;		/* next to send */
	uint32		note_count;		/* waiting in the ring */
	bool		note_lost;		/* the ring was full: resend all */
	PfNote		notes[PF_NOTE_RING];
} PfShared;

extern PfShared *pf_shared;

extern void pf_shmem_init(void);
extern void pf_wake_at_commit(void);
extern bool pf_note_possible(void);
extern bool pf_note_at_commit(const char *channel, const char *payload);
extern int	pf_notes_take(PfNote *out, int max, bool *lost);

#endif							/* PARFLOW_SHMEM_H */
