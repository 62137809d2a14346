# A private D-Bus for tests and benchmarks (tpm_lib.sh's tpm2-abrmd, bench/update.sh's RAUC). POSIX sh.
#
#   dbus_private_conf SOCKET   Prints the configuration of a session-type bus
#                              listening on the unix socket SOCKET: the policy of
#                              Debian's session.conf (without it the bus answers
#                              nothing), and <allow user="*"/>, so that a bus run
#                              by one user (nobody) takes clients of another (root).
dbus_private_conf() {
    cat <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$1</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOF
}
