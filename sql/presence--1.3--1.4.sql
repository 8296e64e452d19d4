/*
 * presence 1.3 -> 1.4
 *
 * Three things the activity log living in the database makes possible:
 * presence at any past moment (present_at, presence_timeline,
 * presence_intervals), signed audit checkpoints that an auditor verifies
 * outside the database (audit_checkpoint, presence.audit_checkpoints), and
 * permissions decided by the application's own SQL function
 * (presence.permission_function).
 */
\echo Use "ALTER EXTENSION presence UPDATE TO '1.4'" to load this file. \quit

-- == Presence at any past moment ==

-- == Signed audit checkpoints ==

-- == Permissions from the application's function ==
