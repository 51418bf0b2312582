# shellcheck shell=sh disable=SC2034
# (SC2034: CHANGED is read by the hooks that source this file.)
# UCI helpers for the OpenWrt hooks (sourced after common.sh).
#
# Every call names the config dir (-c, so TITIK_ROOT works) and a private save dir (-t) for
# staged changes: a commit then commits only what this hook staged, never half-finished LuCI
# edits waiting in /tmp/.uci.

UCI_CONFDIR=$R/etc/config
UCI_SAVEDIR=$R/tmp/.titik-uci

u() {
	uci -c "$UCI_CONFDIR" -t "$UCI_SAVEDIR" "$@"
}

# uci_begin PKG: drop anything a killed earlier run left staged; remember the current state.
uci_begin() {
	have uci || fail uci "not installed"
	mkdir -p "$UCI_SAVEDIR" || fail uci "cannot create $UCI_SAVEDIR"
	u -q revert "$1"
	UCI_BEFORE=$(u -q show "$1")
}

# uci_opt PKG.SECTION.OPTION [VALUE]: set the option, or delete it when no VALUE is given
# (the option then takes the firmware's default).
uci_opt() {
	if [ $# -ge 2 ]; then
		u set "$1=$2" || fail uci "set ${1#*.} failed"
	else
		u -q delete "$1" || true
	fi
}

# uci_finish PKG: commit if the staged changes alter the config; CHANGED is true or false.
# Comparing `uci show` before and after (as openwisp-reload-config does with its md5) makes a
# second, identical apply a no-op that neither rewrites the file nor reloads the service.
uci_finish() {
	if [ "$(u -q show "$1")" = "$UCI_BEFORE" ]; then
		u -q revert "$1"
		CHANGED=false
	else
		u commit "$1" || fail uci "commit $1 failed"
		CHANGED=true
	fi
}
