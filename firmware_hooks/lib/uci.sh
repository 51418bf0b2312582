# shellcheck shell=sh disable=SC2034
# (SC2034: CHANGED is read by the hooks that source this file.)
# UCI helpers for the OpenWrt hooks (sourced after common.sh).
#
# Every call names the config dir (-c, so TITIK_ROOT works) and a private save dir (-t) for
# the hook's staged changes. libuci still reads /tmp/.uci as well, where LuCI ("Save") and a
# plain `uci set` stage theirs, so a commit would write those into the file too:
# uci_check_pending refuses to go on while the package has changes staged there.
#
# After `uci commit` (and `uci revert`), libuci leaves the package's delta file behind,
# truncated to zero bytes, rather than deleting it: "changes staged" means a non-empty file
# (test -s), never an existing one.

UCI_CONFDIR=$R/etc/config
UCI_SAVEDIR=$R/tmp/.titik-uci
UCI_SHARED_SAVEDIR=$R/tmp/.uci

u() {
	uci -c "$UCI_CONFDIR" -t "$UCI_SAVEDIR" "$@"
}

# uci_check_pending PKG: fail if someone else has changes to PKG staged and not committed.
uci_check_pending() {
	if [ -s "$UCI_SHARED_SAVEDIR/$1" ]; then
		fail uci "/etc/config/$1 has uncommitted changes in /tmp/.uci (LuCI \"Save\" without \"Apply\", or uci set without uci commit), which a commit would apply too: commit or revert them (uci changes $1; uci revert $1), then retry"
	fi
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

# uci_marked PKG: the sections marked `option titik '1'`, by the names uci itself uses, so
# that an anonymous one (@wifi-iface[N] in `uci show`) comes out as cfgXXXXXX, which
# `uci delete PKG.cfgXXXXXX` accepts and which does not shift when another section goes.
uci_marked() {
	u -q -X show "$1" | sed -n "s/^$1\\.\\([A-Za-z0-9_]*\\)\\.titik='1'\$/\\1/p"
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
