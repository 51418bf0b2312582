# shellcheck shell=sh disable=SC2034,SC2086,SC2154,SC2295
# (variables set through eval, and list_contains matching as a pattern, are as in the original)
# STAND-IN for OpenWrt's /lib/functions.sh, for tests only: this machine has no OpenWrt
# userland. It is our own POSIX sh, written to behave as these do (read from openwrt/openwrt):
#   package/base-files/files/lib/functions.sh   config_load, config, option, list, config_get,
#                                               config_set, config_foreach, config_list_foreach
#   package/system/uci/files/lib/config/uci.sh  uci_load (functions.sh sources it)
# What they do, and this does too:
# - config_load returns 0 at once, loading nothing, when IPKG_INSTROOT is set (an image being
#   built); uci_load is then not even defined (functions.sh sources uci.sh only without it).
# - uci_load evals the output of `uci -c $UCI_CONFIG_DIR -P /var/state -S -n export PKG`, so
#   changes staged in /tmp/.uci and /var/state are seen, and every anonymous section arrives
#   with the name uci gives it (cfgXXXXXX): config_cb and config_foreach see that name.
# - config() calls config_cb TYPE NAME, option() option_cb NAME VALUE, list() list_cb NAME
#   VALUE, each as its line is read; a section's values are in CONFIG_<section>_<option>.
# - uci_load ends with a bare `config_cb` (no arguments) if it loaded any section, so a
#   config_cb that collects a section's options can finish the last one.
# Differences, none visible to a script: no `local` or `export -n` (POSIX, so it runs under
# dash too; helper variables are prefixed _fs_), `uci` is found on PATH rather than at
# /sbin/uci, and /var/state is "$STANDIN_ROOT/var/state".

NO_EXPORT=1
LOAD_STATE=1
LIST_SEP=" "
CONFIG_APPEND=
N='
'

# append VAR VALUE [SEP]: VAR gets VALUE, after SEP if VAR was not empty.
append() {
	eval "$1=\"\${$1:+\${$1}\${2:+\${3:- }}}\$2\""
}

list_contains() {
	eval "_fs_val=\" \${$1} \""
	[ "${_fs_val%% $2 *}" != "$_fs_val" ]
}

config_load() {
	[ -n "$IPKG_INSTROOT" ] && return 0
	uci_load "$@"
}

reset_cb() {
	config_cb() { return 0; }
	option_cb() { return 0; }
	list_cb() { return 0; }
}
reset_cb

package() {
	return 0
}

config() {
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	_fs_name=${2:-cfg$CONFIG_NUM_SECTIONS}
	append CONFIG_SECTIONS "$_fs_name"
	CONFIG_SECTION=$_fs_name
	config_set "$CONFIG_SECTION" TYPE "$1"
	[ -n "$NO_CALLBACK" ] || config_cb "$1" "$_fs_name"
}

option() {
	_fs_opt=$1
	shift
	config_set "$CONFIG_SECTION" "$_fs_opt" "$*"
	[ -n "$NO_CALLBACK" ] || option_cb "$_fs_opt" "$*"
}

list() {
	_fs_opt=$1
	shift
	config_get _fs_len "$CONFIG_SECTION" "${_fs_opt}_LENGTH" 0
	[ "$_fs_len" = 0 ] && append CONFIG_LIST_STATE "${CONFIG_SECTION}_${_fs_opt}"
	_fs_len=$((_fs_len + 1))
	config_set "$CONFIG_SECTION" "${_fs_opt}_ITEM$_fs_len" "$*"
	config_set "$CONFIG_SECTION" "${_fs_opt}_LENGTH" "$_fs_len"
	append "CONFIG_${CONFIG_SECTION}_${_fs_opt}" "$*" "$LIST_SEP"
	[ -n "$NO_CALLBACK" ] || list_cb "$_fs_opt" "$*"
}

config_set() {
	eval "CONFIG_${1}_${2}=\$3"
}

config_unset() {
	config_set "$1" "$2" ""
}

# config_get VAR SECTION OPTION [DEFAULT]  or  config_get SECTION OPTION (prints it)
config_get() {
	case "$2${3:-$1}" in
	*[!A-Za-z0-9_]*) : ;;
	*)
		case "$3" in
		"") eval echo "\"\${CONFIG_${1}_${2}:-\${4}}\"" ;;
		*) eval "${1}=\${CONFIG_${2}_${3}:-\${4}}" ;;
		esac
		;;
	esac
}

# config_foreach FUNCTION [TYPE [ARGS...]]: FUNCTION SECTION ARGS... for each (typed) section.
config_foreach() {
	_fs_fn=$1
	[ "$#" -ge 1 ] && shift
	_fs_type=$1
	[ "$#" -ge 1 ] && shift
	[ -z "$CONFIG_SECTIONS" ] && return 0
	for _fs_section in $CONFIG_SECTIONS; do
		config_get _fs_cfgtype "$_fs_section" TYPE
		[ -n "$_fs_type" ] && [ "x$_fs_cfgtype" != "x$_fs_type" ] && continue
		eval "$_fs_fn \"\$_fs_section\" \"\$@\""
	done
}

# config_list_foreach SECTION OPTION FUNCTION [ARGS...]
config_list_foreach() {
	[ "$#" -ge 3 ] || return 0
	_fs_lsection=$1
	_fs_lopt=$2
	_fs_lfn=$3
	shift 3
	config_get _fs_llen "$_fs_lsection" "${_fs_lopt}_LENGTH"
	[ -z "$_fs_llen" ] && return 0
	_fs_c=1
	while [ "$_fs_c" -le "$_fs_llen" ]; do
		config_get _fs_lval "$_fs_lsection" "${_fs_lopt}_ITEM$_fs_c"
		eval "$_fs_lfn \"\$_fs_lval\" \"\$@\""
		_fs_c=$((_fs_c + 1))
	done
}

# /lib/config/uci.sh, which functions.sh sources only when IPKG_INSTROOT is empty.
if [ -z "$IPKG_INSTROOT" ]; then
	uci_load() {
		_fs_pkg=$1
		_C=0
		if [ -z "$CONFIG_APPEND" ]; then
			for _fs_var in $CONFIG_LIST_STATE; do
				eval "CONFIG_${_fs_var}="
				eval "CONFIG_${_fs_var}_LENGTH="
			done
			CONFIG_LIST_STATE=
			CONFIG_SECTIONS=
			CONFIG_NUM_SECTIONS=0
			CONFIG_SECTION=
		fi
		_fs_data=$(uci ${UCI_CONFIG_DIR:+-c "$UCI_CONFIG_DIR"} \
			${LOAD_STATE:+-P "${STANDIN_ROOT}/var/state"} -S -n export "$_fs_pkg" 2>/dev/null)
		_fs_ret=$?
		[ "$_fs_ret" != 0 ] || [ -z "$_fs_data" ] || eval "$_fs_data"
		unset _fs_data
		${CONFIG_SECTION:+config_cb}
		return "$_fs_ret"
	}
fi
