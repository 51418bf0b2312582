# shellcheck shell=sh
# The upgrade hook's shared part (sourced after common.sh by <platform>/upgrade). Contract:
# docs/firmware_hooks.md, "The upgrade hook"; the whole flow: docs/upgrades.md.
#
# The platform file defines:
#   pkg_probe             sets FORMAT, ARCH and INSTALLED (the package's version, "" if none)
#   pkg_keep DEST FROM    writes the installed package (version FROM) to DEST, for rollback
#   pkg_install FILE      installs FILE (an upgrade); pkg_reinstall FILE installs FILE even
#                         when it is older (the rollback). Both set UPGRADE_ERR on failure.
# and may set PKG_ROOT_DIR (the directory whose free space counts; default $R/).
#
# Actions (the agent's side is agent/remote/upgrade.py):
#   probe     stdin {"dir"}: {"ok":true,"format","arch","installed","free_kb"}
#   install   stdin {"dir","package","version","from","deadline"}: keeps the running package as
#             DIR/previous.<format>, then starts the worker and answers at once
#   rollback  stdin {"dir","reason"}: starts the worker in rollback mode and answers at once
#   worker DIR [rollback REASON]   (internal) installs DIR/job.package, writes DIR/install.result
#             ("ok" or "failed: ..."), then waits until DIR/job.deadline for DIR/confirmed (the
#             new agent writes it once healthy); without it, reinstalls DIR/previous.<format> and
#             writes DIR/rollback.result ("rolled back to V: why" or "rollback failed: ...").
#
# Why a detached worker: installing restarts the agent's service, and systemd stops every
# process of the service's cgroup (dpkg included) and keeps /usr read-only for it
# (ProtectSystem=yes); so on systemd the worker is a transient unit of its own (systemd-run).
# procd signals only the service's main process, so there a setsid'd process survives.

UPGRADE_ERR=""

_kv() { # _kv FILE: the first line of FILE
	[ -f "$1" ] && sed -n 1p "$1"
}

free_kb() {
	df -Pk "${PKG_ROOT_DIR:-$R/}" 2>/dev/null | awk 'NR == 2 { print $4 }'
}

upgrade_probe() {
	pkg_probe
	_up_free=$(free_kb)
	case $_up_free in '' | *[!0-9]*) _up_free=null ;; esac
	printf '{"ok":true,"format":"%s","arch":"%s","installed":"%s","free_kb":%s}\n' \
		"$(json_escape "$FORMAT")" "$(json_escape "$ARCH")" "$(json_escape "$INSTALLED")" \
		"$_up_free" >&3
	exit 0
}

_up_dir() {
	jget dir || die_usage dir "missing"
	UP_DIR=$JV
	case $UP_DIR in /*) ;; *) die_usage dir "must be an absolute path" ;; esac
	mkdir -p "$UP_DIR" || fail dir "cannot create $UP_DIR"
}

upgrade_install() {
	_up_dir
	jget package || die_usage package "missing"
	_up_pkg=$JV
	[ -f "$_up_pkg" ] || die_usage package "no such file"
	jget version || die_usage version "missing"
	_up_ver=$JV
	jget from || die_usage from "missing"
	_up_from=$JV
	jint deadline || die_usage deadline "missing"
	_up_deadline=$JV
	pkg_probe
	# The running package, for the rollback: kept before anything changes.
	_up_prev=$UP_DIR/previous.$FORMAT
	rm -f "$_up_prev.tmp"
	pkg_keep "$_up_prev.tmp" "${INSTALLED:-$_up_from}" ||
		fail previous "cannot keep the running package for rollback: $UPGRADE_ERR"
	mv -f "$_up_prev.tmp" "$_up_prev" || fail previous "cannot store $_up_prev"
	printf '%s\n' "${INSTALLED:-$_up_from}" >"$_up_prev.version"
	printf '%s\n' "$_up_pkg" >"$UP_DIR/job.package"
	printf '%s\n' "$_up_ver" >"$UP_DIR/job.version"
	printf '%s\n' "$_up_deadline" >"$UP_DIR/job.deadline"
	printf '%s\n' "$FORMAT" >"$UP_DIR/job.format"
	rm -f "$UP_DIR/install.result" "$UP_DIR/rollback.result" "$UP_DIR/confirmed"
	sync
	upgrade_spawn "$UP_DIR" install ""
	reply_ok
}

upgrade_rollback() {
	_up_dir
	jget reason || JV="asked by the agent"
	[ -f "$UP_DIR/job.format" ] || fail previous "no upgrade to roll back"
	upgrade_spawn "$UP_DIR" rollback "$JV"
	reply_ok
}

# upgrade_spawn DIR MODE REASON: the worker, detached from the agent and its service. It runs
# under /bin/sh (TITIK_HOOK_SHELL overrides it: the tests run it under the shell under test).
upgrade_spawn() {
	_up_sh=${TITIK_HOOK_SHELL:-/bin/sh}
	if [ -z "$R" ] && [ -d /run/systemd/system ] && have systemd-run; then
		systemd-run --quiet --collect --unit="titik-upgrade-$(date +%s)" \
			--description="Titik agent upgrade" \
			--setenv=TITIK_ROOT="${TITIK_ROOT:-/}" --setenv=PATH="$PATH" \
			/bin/sh "$0" worker "$1" "$2" "$3" 3>&- ||
			fail worker "systemd-run could not start the upgrade worker"
	elif have setsid; then
		setsid "$_up_sh" "$0" worker "$1" "$2" "$3" </dev/null >>"$1/worker.log" 2>&1 3>&- &
	else
		"$_up_sh" "$0" worker "$1" "$2" "$3" </dev/null >>"$1/worker.log" 2>&1 3>&- &
	fi
}

_up_result() { # FILE TEXT: written atomically, so the agent never reads half of it
	printf '%s\n' "$2" >"$1.tmp" && sync && mv -f "$1.tmp" "$1" && sync
}

_up_rollback() { # DIR FORMAT WHY
	_up_prev=$1/previous.$2
	_up_pv=$(_kv "$_up_prev.version")
	pkg_probe
	if [ -n "$_up_pv" ] && [ "$INSTALLED" = "$_up_pv" ]; then
		# A failed install that changed nothing: the package manager would refuse to reinstall.
		_up_result "$1/rollback.result" "rolled back to $_up_pv (still installed): $3"
	elif [ ! -f "$_up_prev" ]; then
		_up_result "$1/rollback.result" "rollback failed: no previous package ($3)"
	elif pkg_reinstall "$_up_prev"; then
		_up_result "$1/rollback.result" "rolled back to $_up_pv: $3"
	else
		_up_result "$1/rollback.result" "rollback failed: $UPGRADE_ERR ($3)"
	fi
}

upgrade_worker() { # DIR MODE REASON
	_w_dir=$1
	trap '' HUP
	echo $$ >"$_w_dir/worker.pid"
	_w_fmt=$(_kv "$_w_dir/job.format")
	FORMAT=$_w_fmt
	if [ "$2" = rollback ]; then
		_up_rollback "$_w_dir" "$_w_fmt" "$3"
		rm -f "$_w_dir/worker.pid"
		return 0
	fi
	_w_pkg=$(_kv "$_w_dir/job.package")
	_w_deadline=$(_kv "$_w_dir/job.deadline")
	note "installing $(_kv "$_w_dir/job.version")"
	if pkg_install "$_w_pkg"; then
		_up_result "$_w_dir/install.result" "ok"
	else
		# The package manager may have left the new version half-installed: put the old back.
		# The rollback's result is written first: an agent that read "failed" here before
		# it would report a failure where the gateway is back on its old version.
		_w_err=$UPGRADE_ERR
		_up_rollback "$_w_dir" "$_w_fmt" "install failed: $_w_err"
		_up_result "$_w_dir/install.result" "failed: $_w_err"
		rm -f "$_w_dir/worker.pid"
		return 0
	fi
	# The health gate: the new agent writes DIR/confirmed once connected and acknowledged.
	# The clock is read every 10 s, not every second: a wave starts many workers at once
	# (thousands in the simulator), and each `date` is a process of its own.
	while _w_now=$(date +%s) && [ "$_w_now" -lt "$_w_deadline" ]; do
		_w_n=$((_w_deadline - _w_now))
		[ "$_w_n" -gt 10 ] && _w_n=10
		while [ "$_w_n" -gt 0 ]; do
			if [ -e "$_w_dir/confirmed" ]; then
				rm -f "$_w_dir/worker.pid"
				return 0
			fi
			sleep 1
			_w_n=$((_w_n - 1))
		done
	done
	if [ ! -e "$_w_dir/confirmed" ]; then
		_up_rollback "$_w_dir" "$_w_fmt" \
			"health gate: the new agent did not connect and report healthy by its deadline"
	fi
	rm -f "$_w_dir/worker.pid"
}

upgrade_main() {
	ACTION=${1:-}
	case $R in
	'' | /*) ;;
	*) die_usage TITIK_ROOT "must be an absolute path" ;;
	esac
	case $ACTION in
	probe)
		read_input
		upgrade_probe
		;;
	install)
		read_input
		upgrade_install
		;;
	rollback)
		read_input
		upgrade_rollback
		;;
	worker)
		[ $# -ge 3 ] || die_usage usage "upgrade worker DIR MODE [REASON]"
		upgrade_worker "$2" "$3" "${4:-}"
		exit 0
		;;
	*) die_usage usage "unknown action (expected probe, install or rollback)" ;;
	esac
}
