# shellcheck shell=sh
# The simulated platform's hooks (sourced after common.sh by simulated/<section>): no
# firmware, just a state file per section, for the demo and the agent's integration tests.
#
#   $TITIK_ROOT/var/lib/titik-sim/<section>.json   the last applied input, as received
#   $TITIK_ROOT/var/lib/titik-sim/events.log       "<section> <action> ..." per change/reload
#   $TITIK_ROOT/etc/titik-sim/fail-<action>        if present, <action> fails with
#                                                   {"ok":false,"error":"simulated failure"}

SIM_DIR=$R/var/lib/titik-sim
SIM_STATE=$SIM_DIR/$SECTION.json

sim_event() {
	mkdir -p "$SIM_DIR" && printf '%s %s\n' "$SECTION" "$*" >>"$SIM_DIR/events.log"
}

sim_fail_marker() {
	[ ! -e "$R/etc/titik-sim/fail-$ACTION" ] || fail_message "simulated failure"
}

# Validation always passes: the simulated gateway has whatever radios it is told about.
do_validate() {
	sim_fail_marker
}

do_apply() {
	sim_fail_marker
	atomic_open "$SIM_STATE" || fail state "cannot write $SIM_DIR"
	printf '%s\n' "$INPUT" >"$ATOMIC_TMP"
	atomic_replace "$SIM_STATE" || reply_changed false
	sim_event apply changed
	reply_changed true
}

do_snapshot() {
	sim_fail_marker
	snap_begin
	snap_save state.json "$SIM_STATE"
	snap_commit
}

do_restore() {
	sim_fail_marker
	snap_open
	snap_restore state.json "$SIM_STATE"
	sim_event restore reloaded
}
