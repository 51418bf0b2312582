# shellcheck shell=sh
# The hotspot section's input, read the same way on every platform (sourced after common.sh).

# hotspot_check: the shape checks; exit 2 on input the agent's schema should have refused.
hotspot_check() {
	jbool enabled 1
	jint download_kbps || true
	jint upload_kbps || true
	jint session_timeout_min || true
}

# hotspot_needs_portal WHERE: without a captive portal, refuse what only the portal can do.
hotspot_needs_portal() {
	jbool enabled 1
	[ "$JV" = 0 ] || fail enabled "openNDS is not installed ($1)"
	for _hk in download_kbps upload_kbps; do
		if jint "$_hk"; then fail "$_hk" "needs openNDS, which is not installed ($1)"; fi
	done
}
