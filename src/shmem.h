/*
 * shmem.h - the shared state between backends, the launcher and the
 * dispatchers (one slot per served database), and the commit-time wake-up.
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

/* What a database's dispatcher is doing, or why the last one stopped. */
typedef enum PfDispState
{
	PF_DISP_STARTING,			/* started, not serving yet (or crashed) */
	PF_DISP_SERVING,			/* serving (or crashed while it was) */
	PF_DISP_NO_EXTENSION,		/* stopped: the extension is not there */
	PF_DISP_HELD				/* stopped: a DROP/RENAME DATABASE wanted it gone */
} PfDispState;

/*
 * One served database.  The launcher assigns a free slot (dboid) before it
 * starts the database's dispatcher and frees it when the database is no
 * longer served; backends find their database's slot by MyDatabaseId.
 */
typedef struct PfDbSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		dispatcher_pid; /* 0 when no dispatcher runs */
	Latch	   *dispatcher_latch;	/* its latch once it serves, set to wake it */
	PfDispState state;			/* set by the dispatcher, read by the launcher */
	pg_atomic_uint32 pass_wanted;	/* a commit asked for a dispatch pass */
	pg_atomic_uint64 passes;	/* dispatch passes done since the slot was assigned */
	pg_atomic_uint64 notes_sent;	/* notes the dispatcher has sent */

	/* notes from committing transactions, sent by the dispatcher */
	LWLock	   *note_lock;		/* protects the fields below */
	uint32		note_head;		/* next to send */
	uint32		note_count;		/* waiting in the ring */
	bool		note_lost;		/* the ring was full: resend all */
	PfNote		notes[PF_NOTE_RING];
} PfDbSlot;

/* Databases a utility command wants no dispatcher in, while it runs. */
#define PF_HOLD_MAX 16

/* Databases whose extension may have appeared, for the launcher to look at. */
#define PF_PROBE_MAX 16

typedef struct PfShared
{
	LWLock	   *lock;			/* protects what follows but the slots' rings */
	pid_t		launcher_pid;	/* 0 when no launcher runs */
	Latch	   *launcher_latch; /* set to have it look again */
	Oid			hold_db[PF_HOLD_MAX];	/* InvalidOid: free entry */
	pid_t		hold_pid[PF_HOLD_MAX];	/* the backend that holds it */
	Oid			probe_db[PF_PROBE_MAX];
	int			n_probe;
	bool		probe_all;		/* more than PF_PROBE_MAX were asked for */
	int			n_slots;		/* parflow.max_databases */
	PfDbSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PfShared;

extern PfShared *pf_shared;

extern void pf_shmem_init(void);
extern PfDbSlot *pf_my_slot(void);
extern PfDbSlot *pf_slot_of(Oid dboid);
extern void pf_slot_reset(PfDbSlot *slot, Oid dboid);
extern void pf_wake_at_commit(void);
extern bool pf_note_possible(void);
extern bool pf_note_at_commit(const char *channel, const char *payload);
extern bool pf_note_forget_last(void);
extern int	pf_notes_take(PfNote *out, int max, bool *lost);

#endif							/* PARFLOW_SHMEM_H */
