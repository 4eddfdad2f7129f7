#!/bin/sh
# Install jobcarbon on a Slurm controller: the steps of slurm/README.md, as one script.
#
# Run as root from a checkout: `sh slurm/install.sh [--dry-run]`. Safe to run again:
# what is already there is left as it is (the package is reinstalled from the checkout;
# an existing /etc/jobcarbon/config.yaml is kept). It never edits slurm.conf: it prints
# the lines to set there, merged with what the site already has (its EpilogSlurmctld
# is chained, its AccountingStorageTRES kept and completed), and never starts a service.
set -eu

usage() {
    cat <<'EOF'
Usage: sh slurm/install.sh [--dry-run] [--user NAME] [--python PATH] [--slurm-conf PATH] [--root DIR]

  --dry-run          print what would be done; change nothing
  --user NAME        the services' user: SlurmUser, which owns the spool [default: slurm]
  --python PATH      the Python for the venv; a system one that NAME can run
                     [default: /usr/bin/python3]
  --slurm-conf PATH  the cluster's slurm.conf [default: $SLURM_CONF or /etc/slurm/slurm.conf]
  --root DIR         install into DIR as a tree of its own (tests, trials): every path
                     installed and written (units, config, epilog wrapper) is under DIR
EOF
}

dry_run=0
user=slurm
python=/usr/bin/python3
slurm_conf=${SLURM_CONF:-/etc/slurm/slurm.conf}
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --user) user=$2; shift ;;
        --python) python=$2; shift ;;
        --slurm-conf) slurm_conf=$2; shift ;;
        --root) root=$(cd "$2" && pwd); shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

die() { printf 'install.sh: %s\n' "$1" >&2; exit 1; }
say() { printf '%s\n' "$1"; }
run() {  # a command, or in a dry run the command printed
    if [ "$dry_run" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}
write() {  # stdin to file $1 with mode $2 (and group $3), replaced only if it differs
    tmp=$(mktemp)
    cat > "$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return
    fi
    if [ "$dry_run" = 1 ]; then
        printf '+ write %s\n' "$1"
        rm -f "$tmp"
        return
    fi
    install -m "$2" ${3:+-g "$3"} "$tmp" "$1"
    rm -f "$tmp"
}

checkout=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/opt/jobcarbon
bin=$root/usr/local/bin/jobcarbon
etc=$root/etc/jobcarbon
state=$root/var/lib/jobcarbon
spool=$root/var/spool/jobcarbon
libexec=$root/usr/local/libexec/jobcarbon
units=$root/etc/systemd/system
for path in "$checkout" "$root" "$slurm_conf"; do
    case "$path" in *"'"*) die "a path with a quote in it: $path" ;; esac
done

[ "$dry_run" = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (or with --dry-run)"
id "$user" >/dev/null 2>&1 || die "no user $user: give SlurmUser with --user"
group=$(id -gn "$user")

# --- 1. the package, in a venv SlurmUser can run --------------------------------------
[ -x "$python" ] || die "no Python at $python: give a system one with --python"
if [ "$dry_run" = 0 ] && ! runuser -u "$user" -- "$python" -c '' 2>/dev/null; then
    die "$user cannot run $python (is it under a home directory?): give a system Python with --python, e.g. /usr/bin/python3"
fi
if [ ! -x "$venv/bin/python" ]; then
    run "$python" -m venv "$venv"
fi
run "$venv/bin/pip" install --quiet "$checkout"
run install -d -m 0755 "$(dirname "$bin")"
run ln -sfn "$venv/bin/jobcarbon" "$bin"

# --- 2. the config and the state directory --------------------------------------------
run install -d -m 0755 "$etc"
if [ ! -f "$etc/config.yaml" ]; then
    if [ "$dry_run" = 1 ]; then
        say "+ write $etc/config.yaml (from \`jobcarbon config example\`)"
    else
        "$bin" config example \
            | sed -e "s#sqlite:////var/lib/jobcarbon/#sqlite:///$state/#" \
                  -e "s#spool_dir: /var/spool/jobcarbon#spool_dir: $spool#" \
            | write "$etc/config.yaml" 0640 "$group"
    fi
fi
# the ledger names every user's jobs: only the service's user and group read it
run install -d -o "$user" -g "$group" -m 0750 "$state"

# --- 3. the epilog and its spool ------------------------------------------------------
for dir in "$spool" "$spool/new" "$spool/tmp" "$spool/failed"; do
    run install -d -o "$user" -g "$group" -m 0750 "$dir"
done
run install -D -m 0755 "$checkout/slurm/epilog" "$libexec/epilog"

setting() {  # the last value of slurm.conf key $1 (keys are case-insensitive), or nothing
    [ -r "$slurm_conf" ] || return 0
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([^#[:space:]]*\).*/\1/Ip" "$slurm_conf" \
        | tail -n 1
}
wrapper=$libexec/epilog-slurmctld
current_epilog=$(setting EpilogSlurmctld)
case "$current_epilog" in
    "$wrapper")  # installed before: keep the site's epilog it already chains
        previous=$(sed -n "s/.*JOBCARBON_PREVIOUS_EPILOG='\([^']*\)'.*/\1/p" "$wrapper" 2>/dev/null) ;;
    "$libexec/epilog") previous="" ;;
    *) previous=$current_epilog ;;
esac
case "$previous" in *"'"*) die "EpilogSlurmctld has a quote in it: $previous" ;; esac
write "$wrapper" 0755 <<EOF
#!/bin/sh
# Written by jobcarbon's slurm/install.sh; slurm.conf's EpilogSlurmctld runs it. The
# site's own epilog (if any) runs first and its exit status is kept.
JOBCARBON_SPOOL='$spool' JOBCARBON_PREVIOUS_EPILOG='$previous' exec '$libexec/epilog'
EOF

# --- 4. slurm.conf: the lines to set, merged with the site's --------------------------
gpu_types() {  # typed GPU names, from gres.conf beside slurm.conf, else from sinfo
    gres_conf=$(dirname "$slurm_conf")/gres.conf
    if [ -r "$gres_conf" ]; then
        grep -i 'name=gpu' "$gres_conf" | sed -n 's/.*[Tt]ype=\([^[:space:],]*\).*/\1/p'
    elif command -v sinfo >/dev/null 2>&1; then
        sinfo -h -o '%G' 2>/dev/null | tr ',' '\n' | sed -n 's/^gpu:\([^:(]*\):.*/\1/p'
    fi
}
tres=$(setting AccountingStorageTRES)
merged=$tres
for item in gres/gpu $(gpu_types | sort -u | sed 's#^#gres/gpu:#'); do
    case ",$merged," in
        *",$item,"*) ;;
        *) merged=${merged:+$merged,}$item ;;
    esac
done

# --- 5. the systemd units -------------------------------------------------------------
run install -d -m 0755 "$units"
for unit in jobcarbon-collector.service jobcarbon-exporter.service \
        jobcarbon-report.service jobcarbon-report.timer; do
    sed -e "s#/usr/local/bin/jobcarbon#$bin#g" -e "s#/etc/jobcarbon#$etc#g" \
        -e "s#/var/lib/jobcarbon#$state#g" -e "s#/var/spool/jobcarbon#$spool#g" \
        -e "s#^User=slurm\$#User=$user#" "$checkout/slurm/$unit" \
        | write "$units/$unit" 0644
done

say ""
say "slurm.conf ($slurm_conf): set these lines, then run \`scontrol reconfigure\`:"
if [ "$current_epilog" = "$wrapper" ]; then
    say "  EpilogSlurmctld=$wrapper"
    say "    (already set${previous:+; it runs the site's $previous first})"
elif [ -n "$current_epilog" ]; then
    say "  EpilogSlurmctld=$wrapper"
    say "    (in place of EpilogSlurmctld=$current_epilog, which it runs first, keeping its exit status)"
else
    say "  EpilogSlurmctld=$wrapper"
fi
say "  AccountingStorageTRES=$merged"
if [ "$merged" = "$tres" ]; then
    say "    (already set)"
elif [ -n "$tres" ]; then
    say "    (in place of AccountingStorageTRES=$tres: the same list, with GPUs added)"
fi

say ""
cluster_name=$(setting ClusterName)
say "Next: edit $etc/config.yaml (its clusters key: ${cluster_name:-Slurm's ClusterName}; hardware rules),"
say "  $bin config check"
say "  systemctl daemon-reload && systemctl enable --now jobcarbon-collector jobcarbon-exporter"
