# shellcheck shell=sh
# Line-based editing of plain config files (sourced after common.sh), used where there is no
# UCI: hostapd.conf, openNDS's legacy opennds.conf, dnsmasq drop-ins.

# conf_edit STYLE FILE EDITS: print FILE with EDITS applied. EDITS holds one edit a line:
# "key=value" sets key (the first existing line is replaced in place, later duplicates are
# dropped, a missing key is appended) and "-key" deletes every line of key. Comments and
# all other lines are kept as they are. Values pass through byte for byte: they reach awk
# through ENVIRON, never -v, which would interpret backslashes.
# STYLE "=": hostapd's key=value. Only the first BSS is edited: lines from the first "bss="
#            on are left alone, and missing keys are added before it.
# STYLE " ": openNDS's "Key value", keys case-insensitive (give them in lower case), leading
#            blanks allowed.
conf_edit() {
	CONF_STYLE=$1 CONF_EDITS=$3 awk '
		function emit(k) {
			done[k] = 1
			print k style val[k]
		}
		function flush(  j) {
			for (j = 1; j <= n; j++) if (!(order[j] in done)) emit(order[j])
		}
		BEGIN {
			style = ENVIRON["CONF_STYLE"]
			m = split(ENVIRON["CONF_EDITS"], lines, "\n")
			for (i = 1; i <= m; i++) {
				e = lines[i]
				if (e == "") continue
				if (substr(e, 1, 1) == "-") { del[substr(e, 2)] = 1; continue }
				p = index(e, "=")
				k = substr(e, 1, p - 1)
				if (!(k in val)) order[++n] = k
				val[k] = substr(e, p + 1)
			}
		}
		passing { print; next }
		{
			k = ""
			if (style == "=") {
				p = index($0, "=")
				if (substr($0, 1, 1) != "#" && p > 1) k = substr($0, 1, p - 1)
				if (k == "bss") { flush(); passing = 1; print; next }
			} else if ($1 !~ /^#/) {
				k = tolower($1)
			}
			if (k != "" && (k in val)) { if (!(k in done)) emit(k); next }
			if (k != "" && (k in del)) next
			print
		}
		END { flush() }
	' "$2"
}
