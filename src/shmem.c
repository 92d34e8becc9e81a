/*
 * shmem.c - parflow's shared memory and the commit-time wake-up.  This file
 * owns the shared struct: the launcher's latch, the databases that utility
 * commands hold free of dispatchers, and one slot per served database
 * (parflow.max_databases of them) with its dispatcher's latch, counters and
 * ring of notes.  Through a transaction callback, any transaction that
 * changed task states (parflow._wake()) sets its own database's dispatcher's
 * latch when it commits, so that the dispatcher reacts within a millisecond
 * instead of at its next safety-net poll.  The ring holds the dispatch
 * notifications that committing transactions hand to their database's
 * dispatcher: a completion that passes its slot straight to the next task
 * (parflow._handover) marks that task dispatched itself, and the NOTIFY is
 * queued here (dropped with the subtransaction that aborts) and handed over
 * just before the commit, for the dispatcher to send once the transaction
 * has committed: only dispatchers send dispatch NOTIFYs.  Without
 * shared_preload_libraries there is no shared state and no dispatcher, and
 * waking and queueing are no-ops.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "guc.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(parflow_wake);
PG_FUNCTION_INFO_V1(parflow_note_dispatch);
PG_FUNCTION_INFO_V1(parflow_dispatcher_counts);

PfShared   *pf_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool xact_callback_registered = false;
static bool wake_pending = false;

/* Notes of the current transaction, each with the nesting level it was made at. */
#define PF_NOTE_LOCAL 16
static PfNote local_notes[PF_NOTE_LOCAL];
static int	local_levels[PF_NOTE_LOCAL];
static int	n_local = 0;
static bool notes_in_flight = false;	/* handed over before the commit */

static Size
pf_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(PfShared, slots),
							 mul_size(sizeof(PfDbSlot), pf_max_databases)));
}

static void
pf_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(pf_shmem_size());
	/* one for the struct, one per slot's ring */
	RequestNamedLWLockTranche("parflow", 1 + pf_max_databases);
}

/* Make a slot free (dboid invalid) or assign it to a database, zeroed. */
void
pf_slot_reset(PfDbSlot *slot, Oid dboid)
{
	slot->dboid = dboid;
	slot->dispatcher_pid = 0;
	slot->dispatcher_latch = NULL;
	slot->state = PF_DISP_STARTING;
	pg_atomic_write_u32(&slot->pass_wanted, 0);
	pg_atomic_write_u64(&slot->passes, 0);
	pg_atomic_write_u64(&slot->notes_sent, 0);
	slot->note_head = 0;
	slot->note_count = 0;
	slot->note_lost = false;
}

static void
pf_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pf_shared = ShmemInitStruct("parflow", pf_shmem_size(), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("parflow");
		int			i;

		memset(pf_shared, 0, pf_shmem_size());
		pf_shared->lock = &locks[0].lock;
		pf_shared->n_slots = pf_max_databases;
		for (i = 0; i < pf_shared->n_slots; i++)
		{
			PfDbSlot   *slot = &pf_shared->slots[i];

			pg_atomic_init_u32(&slot->pass_wanted, 0);
			pg_atomic_init_u64(&slot->passes, 0);
			pg_atomic_init_u64(&slot->notes_sent, 0);
			slot->note_lock = &locks[1 + i].lock;
			pf_slot_reset(slot, InvalidOid);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks; only while preloading. */
void
pf_shmem_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pf_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pf_shmem_startup;
}

/* The slot of a database, or NULL when no dispatcher is meant to serve it. */
PfDbSlot *
pf_slot_of(Oid dboid)
{
	int			i;

	if (pf_shared == NULL || !OidIsValid(dboid))
		return NULL;
	for (i = 0; i < pf_shared->n_slots; i++)
		if (pf_shared->slots[i].dboid == dboid)
			return &pf_shared->slots[i];
	return NULL;
}

/*
 * The slot of this backend's database.  Read without a lock: the launcher
 * reassigns a slot only once its dispatcher has gone, and the ring's lock
 * checks again before notes go in.
 */
PfDbSlot *
pf_my_slot(void)
{
	static int	cached = -1;
	PfDbSlot   *slot;

	if (pf_shared == NULL || !OidIsValid(MyDatabaseId))
		return NULL;
	if (cached >= 0 && pf_shared->slots[cached].dboid == MyDatabaseId)
		return &pf_shared->slots[cached];
	slot = pf_slot_of(MyDatabaseId);
	cached = slot == NULL ? -1 : (int) (slot - pf_shared->slots);
	return slot;
}

/*
 * Move the transaction's notes into the shared ring, each marked with xid
 * (invalid: already committed).  Must not fail (it may run after the
 * commit): when the ring is full the notes are dropped and the dispatcher is
 * told to resend the notification of every dispatched task.
 */
static void
push_local_notes(TransactionId xid)
{
	PfDbSlot   *db = pf_my_slot();
	int			i;

	/* the database's dispatcher went away meanwhile: its successor resends */
	if (db == NULL)
	{
		n_local = 0;
		return;
	}
	LWLockAcquire(db->note_lock, LW_EXCLUSIVE);
	for (i = 0; i < n_local && db->dboid == MyDatabaseId; i++)
	{
		PfNote	   *slot;

		if (db->note_count >= PF_NOTE_RING)
		{
			db->note_lost = true;
			break;
		}
		slot = &db->notes[(db->note_head + db->note_count) % PF_NOTE_RING];
		memcpy(slot, &local_notes[i], sizeof(PfNote));
		slot->xid = xid;
		db->note_count++;
	}
	LWLockRelease(db->note_lock);
	n_local = 0;
}

/* Wake this database's dispatcher, asking for a pass when pass is true. */
static void
set_dispatcher_latch(bool pass)
{
	PfDbSlot   *db = pf_my_slot();
	Latch	   *latch;

	if (db == NULL)
		return;
	if (pass)
		pg_atomic_write_u32(&db->pass_wanted, 1);
	latch = db->dispatcher_latch;
	if (latch != NULL)
		SetLatch(latch);
}

static void
pf_xact_callback(XactEvent event, void *arg)
{
	if (pf_shared == NULL)
	{
		wake_pending = false;
		notes_in_flight = false;
		n_local = 0;
		return;
	}
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:

			/*
			 * Hand the notes over before the commit record is written, so
			 * that the dispatcher wakes up while this transaction commits:
			 * it sends them once the transaction has committed, and drops
			 * them if it aborts after all.
			 */
			if (n_local > 0 && TransactionIdIsValid(GetTopTransactionIdIfAny()))
			{
				push_local_notes(GetTopTransactionIdIfAny());
				notes_in_flight = true;
				set_dispatcher_latch(false);
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* the dispatcher may have found us still committing: now we are not */
			if (notes_in_flight)
				set_dispatcher_latch(false);
			notes_in_flight = false;
			if (n_local > 0)
			{
				push_local_notes(InvalidTransactionId);
				set_dispatcher_latch(false);
			}
			if (wake_pending)
				set_dispatcher_latch(true);
			wake_pending = false;
			break;
		case XACT_EVENT_PREPARE:

			/*
			 * The commit happens later (COMMIT PREPARED), maybe in another
			 * session that has no notes: the dispatcher resends every
			 * dispatched task's notification at its next wake-up, and the
			 * claim timeout is the backstop.
			 */
			if (n_local > 0 && pf_my_slot() != NULL)
			{
				PfDbSlot   *db = pf_my_slot();

				LWLockAcquire(db->note_lock, LW_EXCLUSIVE);
				db->note_lost = true;
				LWLockRelease(db->note_lock);
			}
			wake_pending = false;
			n_local = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (notes_in_flight)
				set_dispatcher_latch(false);
			notes_in_flight = false;
			wake_pending = false;
			n_local = 0;
			break;
		default:
			break;
	}
}

/* Notes made in a subtransaction go with it when it aborts. */
static void
pf_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			i,
				kept = 0;

	switch (event)
	{
		case SUBXACT_EVENT_ABORT_SUB:
			for (i = 0; i < n_local; i++)
			{
				if (local_levels[i] >= level)
					continue;
				if (kept != i)
				{
					memcpy(&local_notes[kept], &local_notes[i], sizeof(PfNote));
					local_levels[kept] = local_levels[i];
				}
				kept++;
			}
			n_local = kept;
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			for (i = 0; i < n_local; i++)
				if (local_levels[i] >= level)
					local_levels[i] = level - 1;
			break;
		default:
			break;
	}
}

static void
register_callbacks(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(pf_xact_callback, NULL);
		RegisterSubXactCallback(pf_subxact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* Wake the dispatcher when the current transaction commits. */
void
pf_wake_at_commit(void)
{
	register_callbacks();
	wake_pending = true;
}

/*
 * Whether a note made now would be queued (a dispatcher serves this
 * database and this transaction may make more notes), for a caller that
 * must decide before it writes what the note announces.
 */
bool
pf_note_possible(void)
{
	PfDbSlot   *db = pf_my_slot();

	return db != NULL && db->dispatcher_latch != NULL && n_local < PF_NOTE_LOCAL;
}

/*
 * Have the dispatcher send NOTIFY channel, payload once the current
 * transaction commits (nothing if it aborts), and wake it then.  Returns
 * false, queueing nothing, when no dispatcher serves this database, when the
 * channel or payload is too long for a note, or when this transaction has
 * made as many notes as it may: the caller then leaves the task to the
 * dispatcher's pass.
 */
bool
pf_note_at_commit(const char *channel, const char *payload)
{
	if (!pf_note_possible() ||
		strlen(channel) >= PF_NOTE_CHANNEL || strlen(payload) >= PF_NOTE_PAYLOAD)
		return false;
	register_callbacks();
	strlcpy(local_notes[n_local].channel, channel, PF_NOTE_CHANNEL);
	strlcpy(local_notes[n_local].payload, payload, PF_NOTE_PAYLOAD);
	local_levels[n_local] = GetCurrentTransactionNestLevel();
	n_local++;
	return true;
}

/*
 * Forget the last note this transaction handed over (pf_note_at_commit),
 * when the one it tells about needs no telling: the completion that handed
 * its slot to a task claimed that task in the same transaction
 * (parflow_complete_and_claim), so its agent already has it.  Returns
 * whether there was one.
 */
bool
pf_note_forget_last(void)
{
	if (n_local == 0 || local_levels[n_local - 1] != GetCurrentTransactionNestLevel())
		return false;
	n_local--;
	return true;
}

/*
 * The dispatcher's side: take up to max notes waiting for this database,
 * oldest first; *lost says (once) that notes were dropped since the last
 * call (always, when the database has no slot).
 */
int
pf_notes_take(PfNote *out, int max, bool *lost)
{
	PfDbSlot   *db = pf_my_slot();
	int			n = 0;

	if (db == NULL)
	{
		*lost = true;
		return 0;
	}
	LWLockAcquire(db->note_lock, LW_EXCLUSIVE);
	while (n < max && db->note_count > 0)
	{
		memcpy(&out[n++], &db->notes[db->note_head], sizeof(PfNote));
		db->note_head = (db->note_head + 1) % PF_NOTE_RING;
		db->note_count--;
	}
	*lost = db->note_lost;
	db->note_lost = false;
	LWLockRelease(db->note_lock);
	return n;
}

/*
 * parflow._note_dispatch(channel text, payload text) returns boolean: SQL
 * face of pf_note_at_commit.
 */
Datum
parflow_note_dispatch(PG_FUNCTION_ARGS)
{
	char	   *channel;
	char	   *payload;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	channel = text_to_cstring(PG_GETARG_TEXT_PP(0));
	payload = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PG_RETURN_BOOL(pf_note_at_commit(channel, payload));
}

/*
 * parflow._dispatcher_counts() returns bigint[]: the dispatch passes run and
 * the hand-over notifications sent in this database since its dispatcher's
 * slot was assigned (NULL without shared memory or when no dispatcher is
 * meant to serve the database).
 */
Datum
parflow_dispatcher_counts(PG_FUNCTION_ARGS)
{
	PfDbSlot   *db = pf_my_slot();
	Datum		v[2];

	if (db == NULL)
		PG_RETURN_NULL();
	v[0] = Int64GetDatum((int64) pg_atomic_read_u64(&db->passes));
	v[1] = Int64GetDatum((int64) pg_atomic_read_u64(&db->notes_sent));
	PG_RETURN_ARRAYTYPE_P(construct_array(v, 2, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* parflow._wake(): SQL face of pf_wake_at_commit. */
Datum
parflow_wake(PG_FUNCTION_ARGS)
{
	pf_wake_at_commit();
	PG_RETURN_VOID();
}
