# metalflow deploy ramdisk: read the agent's settings from the kernel command line.
# The iPXE script (activities/boot/templates/host.ipxe.j2) writes them; the one secret there is
# a PXE boot's agent token (metalflow.token), which init keeps in a 0600 file and never prints.
parse_cmdline() {
    for arg in $1; do
        case "$arg" in
            metalflow.host_id=*) MF_HOST_ID=${arg#*=} ;;
            metalflow.temporal=*) MF_TEMPORAL=${arg#*=} ;;
            metalflow.namespace=*) MF_NAMESPACE=${arg#*=} ;;
            metalflow.tls=*) MF_TLS=${arg#*=} ;;
            metalflow.tls_ca=*) MF_TLS_CA=${arg#*=} ;;   # http(s) URL or a path on the boot medium
            metalflow.tls_server_name=*) MF_TLS_SERVER_NAME=${arg#*=} ;;
            metalflow.task_queue=*) MF_TASK_QUEUE=${arg#*=} ;;
            metalflow.medium=*) MF_MEDIUM=${arg#*=} ;;   # iso: booted from the host's own ISO
            metalflow.log_url=*) MF_LOG_URL=${arg#*=} ;;   # the boot server's agent-log endpoint
            metalflow.boot_server=*) MF_BOOT_SERVER=${arg#*=} ;;   # where the agent token may go
            metalflow.token=*) MF_TOKEN=${arg#*=} ;;   # a PXE boot's agent token (the one secret here)
            metalflow.boot_ca=*) MF_BOOT_CA=${arg#*=} ;;   # where the boot server's HTTPS CA is (public)
            metalflow.9p=*) MF_9P=${arg#*=} ;;   # tag:/path,... (test bed: agent code over 9p)
            metalflow.agent=*) MF_AGENT=${arg#*=} ;;
            BOOTIF=01-*) MF_BOOT_MAC=$(echo "${arg#BOOTIF=01-}" | tr '-' ':') ;;
        esac
    done
    [ -n "$MF_HOST_ID" ] && [ -n "$MF_TEMPORAL" ]
}

# The interface whose MAC is the boot MAC (BOOTIF), else the first non-loopback one.
boot_interface() {
    for dev in /sys/class/net/*; do
        name=${dev##*/}
        [ "$name" = lo ] && continue
        if [ -z "$MF_BOOT_MAC" ] || [ "$(cat "$dev/address")" = "$MF_BOOT_MAC" ]; then
            echo "$name"; return 0
        fi
    done
    return 1
}
