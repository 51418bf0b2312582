# shellcheck shell=sh disable=SC2034
# (SC2034: variables such as JV and SNAP_TEXT are set here for the hooks that source this file.)
# Shared code for every Titik firmware hook. The contract is docs/firmware_hooks.md.
# A hook sources this file as:  . "$(dirname "$0")/../lib/common.sh"
# then defines do_validate, do_snapshot, do_apply and do_restore and ends with: hook_main "$@"
#
# POSIX sh only: it must run under BusyBox ash (OpenWrt) and dash (Debian), with BusyBox or
# GNU tools alike, and pass `shellcheck -s sh`. So: no `local` (its names are prefixed
# instead), no arrays, no GNU-only flags.

# Byte semantics for sed/awk/grep: SSIDs are UTF-8 and must pass through byte for byte.
LC_ALL=C
export LC_ALL
# Nothing here globs; this keeps names read from the input from ever expanding.
set -f

# The one-line JSON reply goes to fd 3, the real stdout. Everything else the hook or the
# tools it runs print goes to stderr, so a chatty tool can never corrupt the reply.
exec 3>&1 1>&2

SECTION=$(basename "$0")
HOOK_DIR=$(dirname "$0")
NL='
'

# R is the filesystem root without its trailing slash ("" for "/"): paths are "$R/etc/...".
R=${TITIK_ROOT:-/}
R=${R%/}

# --- replies ------------------------------------------------------------------------------

json_escape() {
	printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'
}

reply_ok() {
	printf '{"ok":true}\n' >&3
	exit 0
}

# reply_changed true|false: apply's success reply.
reply_changed() {
	printf '{"ok":true,"changed":%s}\n' "$1" >&3
	exit 0
}

# fail WHAT REASON [STATUS]: WHAT is the key path (relative to the section) or, for failures
# not tied to one key, the step (reload, snapshot, hostapd.conf). Never put a value in REASON:
# it may be a Wi-Fi key.
fail() {
	fail_message "$1: $2" "${3:-1}"
}

# fail_message MESSAGE [STATUS]: the reply with MESSAGE verbatim.
fail_message() {
	printf '{"ok":false,"error":"%s"}\n' "$(json_escape "$1")" >&3
	exit "${2:-1}"
}

# Invalid input or usage: exit status 2.
die_usage() {
	fail "$1" "$2" 2
}

note() {
	printf '%s %s: %s\n' "$SECTION" "${ACTION:-?}" "$*" >&2
}

# --- input --------------------------------------------------------------------------------
# The agent sends one JSON member per line, keys sorted, values JSON strings (only \" and \\
# escaped), numbers, booleans or null; see docs/firmware_hooks.md.

read_input() {
	INPUT=$(cat) || die_usage stdin "cannot read"
	case $INPUT in
	'{}' | "{$NL"*) ;;
	*) die_usage stdin "not the flat one-member-per-line JSON layout" ;;
	esac
	if printf '%s\n' "$INPUT" | grep -v -e '^[{}]$' -e '^{}$' -e '^"[A-Za-z0-9_.]*": [^ ]' >/dev/null; then
		die_usage stdin "not the flat one-member-per-line JSON layout"
	fi
}

# _re KEY: KEY as a sed regex (keys hold only [A-Za-z0-9_.]).
_re() {
	printf '%s' "$1" | sed 's/[.]/\\./g'
}

# jraw KEY: sets JRAW to the JSON text of KEY's value (without the layout's comma);
# status 1 if KEY is absent.
jraw() {
	JRAW=$(printf '%s\n' "$INPUT" | sed -n 's/^"'"$(_re "$1")"'": //p')
	case $JRAW in
	'') return 1 ;;
	\"*) ;;
	*) JRAW=${JRAW%,} ;;
	esac
	return 0
}

# jget KEY: sets JV to KEY's decoded value; status 1 if KEY is absent or null.
jget() {
	jraw "$1" || return 1
	case $JRAW in
	null) return 1 ;;
	\"*)
		# Greedy: the closing quote is the last one before the layout's optional comma.
		case $JRAW in
		*\" | *\",) ;;
		*) die_usage "$1" "malformed JSON string" ;;
		esac
		JV=$(printf '%s\n' "$JRAW" | sed 's/^"\(.*\)",\{0,1\}$/\1/; s/\\\(.\)/\1/g')
		;;
	*) JV=$JRAW ;;
	esac
	return 0
}

# jhas PATH: whether the input holds PATH or anything under it (e.g. jhas radios.radio0).
jhas() {
	printf '%s\n' "$INPUT" | grep '^"'"$(_re "$1")"'[."]' >/dev/null
}

# jnames PREFIX: the distinct names directly under PREFIX, one a line (e.g. jnames radios).
jnames() {
	printf '%s\n' "$INPUT" | sed -n 's/^"'"$(_re "$1")"'\.\([A-Za-z0-9_]*\)[."].*/\1/p' | sort -u
}

# jbool KEY DEFAULT: sets JV to 1 or 0; DEFAULT (1 or 0) when absent or null.
jbool() {
	if jget "$1"; then
		case $JRAW in
		true) JV=1 ;;
		false) JV=0 ;;
		*) die_usage "$1" "must be true or false" ;;
		esac
	else
		JV=$2
	fi
}

# jint KEY: sets JV to KEY's integer value; status 1 if absent or null.
jint() {
	jget "$1" || return 1
	case $JRAW in
	'' | *[!0-9]*) die_usage "$1" "must be a non-negative integer" ;;
	esac
	return 0
}

# --- files --------------------------------------------------------------------------------

# Atomic replacement, so that a power cut leaves the old file or the new one, never half of
# one: the new content goes to a temp file in DEST's directory (mv is only atomic within one
# filesystem; the dot keeps dnsmasq's conf-dir and similar from reading it), which is synced
# and renamed over DEST.
#
# atomic_open DEST [MODEREF]: create that temp file, named in ATOMIC_TMP, with MODEREF's mode
# and owner (default: DEST's; 0600 if neither exists). Write the new content into it, then
# call atomic_commit or atomic_replace. It is removed when the hook exits, if still there.
atomic_open() {
	_ao_dir=$(dirname "$1")
	mkdir -p "$_ao_dir" || return 1
	ATOMIC_TMP=$(mktemp "$_ao_dir/.$(basename "$1").XXXXXX") || return 1
	_ao_ref=${2:-$1}
	if [ -e "$_ao_ref" ]; then cp -p "$_ao_ref" "$ATOMIC_TMP" || return 1; fi
}

# atomic_commit DEST: rename ATOMIC_TMP over DEST.
atomic_commit() {
	sync && mv -f "$ATOMIC_TMP" "$1" && sync
}

# atomic_replace DEST: like atomic_commit, but only if the content differs; status 1 (and
# DEST untouched) if it does not.
atomic_replace() {
	if [ -f "$1" ] && cmp -s "$ATOMIC_TMP" "$1"; then
		rm -f "$ATOMIC_TMP"
		return 1
	fi
	atomic_commit "$1" || fail "$(basename "$1")" "cannot write $1"
}

# install_atomic SRC DEST [MODEREF]: replace DEST with a copy of SRC.
install_atomic() {
	atomic_open "$2" "${3:-}" && cat "$1" >"$ATOMIC_TMP" && atomic_commit "$2"
}

# On exit, remove a temp file or snapshot directory left half-made by a failure.
ATOMIC_TMP=""
SNAP_NEW=""
cleanup() {
	[ -z "$ATOMIC_TMP" ] || rm -f "$ATOMIC_TMP"
	[ -z "$SNAP_NEW" ] || rm -rf "$SNAP_NEW"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# --- snapshots ----------------------------------------------------------------------------
# A snapshot is the directory $TITIK_SNAPSHOT_DIR/<section>/ holding a copy of each file the
# hook manages (NAME) or, for a file that did not exist, an empty NAME.absent marker. It is
# built under a temp name and renamed into place, so it is either complete or absent.

_snap_paths() {
	[ -n "${TITIK_SNAPSHOT_DIR:-}" ] || die_usage TITIK_SNAPSHOT_DIR "not set"
	SNAP=${TITIK_SNAPSHOT_DIR%/}/$SECTION
}

snap_begin() {
	_snap_paths
	(umask 077 && mkdir -p "$TITIK_SNAPSHOT_DIR") || fail snapshot "cannot create the snapshot directory"
	SNAP_NEW=$(mktemp -d "${TITIK_SNAPSHOT_DIR%/}/.$SECTION.XXXXXX") ||
		fail snapshot "cannot create the snapshot directory"
}

# snap_save NAME PATH
snap_save() {
	if [ -e "$2" ]; then
		cp -p "$2" "$SNAP_NEW/$1" || fail snapshot "cannot copy $2"
	else
		: >"$SNAP_NEW/$1.absent"
	fi
}

# snap_save_text NAME TEXT: record a small fact (e.g. whether a service is enabled).
snap_save_text() {
	printf '%s\n' "$2" >"$SNAP_NEW/$1"
}

snap_commit() {
	sync
	rm -rf "$SNAP.old"
	if [ -d "$SNAP" ]; then mv "$SNAP" "$SNAP.old" || fail snapshot "cannot replace the old snapshot"; fi
	mv "$SNAP_NEW" "$SNAP" || fail snapshot "cannot store the snapshot"
	SNAP_NEW=""
	rm -rf "$SNAP.old"
	sync
}

# snap_open: for restore; fails unless a snapshot exists. A crash between the two renames in
# snap_commit leaves only <section>.old, which is then the last complete snapshot.
snap_open() {
	_snap_paths
	if [ ! -d "$SNAP" ]; then
		[ -d "$SNAP.old" ] || fail snapshot "no snapshot to restore"
		SNAP=$SNAP.old
	fi
}

# snap_restore NAME PATH: put PATH back as the snapshot holds it, with its mode (or remove
# it if it was absent then).
snap_restore() {
	if [ -f "$SNAP/$1" ]; then
		install_atomic "$SNAP/$1" "$2" "$SNAP/$1" || fail restore "cannot write $2"
	elif [ -f "$SNAP/$1.absent" ]; then
		rm -f "$2" || fail restore "cannot remove $2"
	else
		fail snapshot "incomplete snapshot: no $1"
	fi
}

# snap_text NAME: the recorded fact, in SNAP_TEXT.
snap_text() {
	[ -f "$SNAP/$1" ] || fail snapshot "incomplete snapshot: no $1"
	SNAP_TEXT=$(cat "$SNAP/$1")
}

# --- dispatch -----------------------------------------------------------------------------

have() {
	command -v "$1" >/dev/null 2>&1
}

hook_main() {
	[ $# -eq 1 ] || die_usage usage "$SECTION validate|snapshot|apply|restore"
	ACTION=$1
	case $R in
	'' | /*) ;;
	*) die_usage TITIK_ROOT "must be an absolute path" ;;
	esac
	case $ACTION in
	validate)
		read_input
		do_validate
		reply_ok
		;;
	apply)
		read_input
		do_apply
		;;
	snapshot)
		do_snapshot
		reply_ok
		;;
	restore)
		do_restore
		reply_ok
		;;
	*) die_usage usage "unknown action (expected validate, snapshot, apply or restore)" ;;
	esac
}
