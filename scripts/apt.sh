# apt_install PACKAGE...: install those of the Debian packages that are missing (sourced by the
# setup scripts). Says what it installs on stderr: some callers' stdout is meant for `eval`.
apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "$(basename "$0"): apt-get install ${missing[*]}" >&2
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
}
