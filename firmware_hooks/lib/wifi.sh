# shellcheck shell=sh
# The wifi section's input, read the same way on every platform (sourced after common.sh).
# Absent members take the schema's defaults (agent/remote/schema.py); null ones leave the
# setting to the firmware's default.

# ssid_encryption NAME: ENC is the SSID's encryption; KEY its passphrase ("" if none).
ssid_encryption() {
	if jget "ssids.$1.encryption"; then ENC=$JV; else ENC=none; fi
	if jget "ssids.$1.key"; then KEY=$JV; else KEY=""; fi
	case $ENC in
	none | owe) ;;
	psk2 | sae | sae-mixed)
		[ -n "$KEY" ] || die_usage "ssids.$1.key" "required with encryption $ENC"
		;;
	*) die_usage "ssids.$1.encryption" "must be none, owe, psk2, sae or sae-mixed" ;;
	esac
}

# ssid_radios NAME: RADIOS is the space-separated list of radios the SSID is on.
ssid_radios() {
	if jget "ssids.$1.radios"; then RADIOS=$JV; else RADIOS=radio0; fi
	[ -n "$RADIOS" ] || die_usage "ssids.$1.radios" "must name at least one radio"
	for _sr in $RADIOS; do
		case $_sr in
		*[!A-Za-z0-9_]*) die_usage "ssids.$1.radios" "bad radio name" ;;
		esac
	done
}

# wifi_check: the shape checks every platform needs; exit 2 on input the agent's schema
# should never have let through.
wifi_check() {
	for _wr in $(jnames radios); do
		jbool "radios.$_wr.enabled" 1
		if jget "radios.$_wr.channel"; then
			case $JV in
			auto) ;;
			'' | *[!0-9]*) die_usage "radios.$_wr.channel" "must be a channel number or auto" ;;
			esac
		fi
		jint "radios.$_wr.txpower" || true
		if jget "radios.$_wr.htmode"; then
			case $JV in
			HT20 | HT40 | VHT20 | VHT40 | VHT80 | VHT160 | HE20 | HE40 | HE80 | HE160) ;;
			*) die_usage "radios.$_wr.htmode" "unknown mode" ;;
			esac
		fi
	done
	for _ws in $(jnames ssids); do
		if ! jget "ssids.$_ws.ssid" || [ -z "$JV" ]; then die_usage "ssids.$_ws.ssid" "required"; fi
		ssid_encryption "$_ws"
		ssid_radios "$_ws"
		jbool "ssids.$_ws.hidden" 0
		jbool "ssids.$_ws.isolation" 1
		jint "ssids.$_ws.max_clients" || true
	done
}
