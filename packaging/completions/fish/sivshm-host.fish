# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sivshm_host_global_optspecs
    string join \n h/help V/version
end

function __fish_sivshm_host_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sivshm_host_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sivshm_host_using_subcommand
    set -l cmd (__fish_sivshm_host_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -s V -l version -d 'Print version'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "check-topology" -d 'Check a topology file (the TOML file `serve` reads) and print every VM\'s devices'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "serve" -d 'Serve a topology file to the user\'s own VMs: every segment and eventfd made once, one unix socket per VM device, each QEMU that connects gets its device\'s setup at once. SIGHUP reloads the file: new workers are added, removed ones retired, the others untouched (a file that would change what running VMs have is refused, nothing changed). Runs until SIGTERM or SIGINT, then removes the sockets'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "status" -d 'Print what the running serve of a topology file reports, as key=value words: its own line (topology, pid, workers, reloads), one line per worker (where its segment and doorbells came from) and one per device (clients connected now, setups sent). Fails while no serve runs or before it is ready, so that a script can wait on it'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "hotplug" -d 'Plug a worker\'s channel into the running manager QEMU (add), or unplug it (remove), over the manager\'s QMP socket: the device qemu-args gives the manager for that worker. Add after serve has the worker (its file reloaded); remove before reloading without it. With --into VM, the worker\'s own device goes into (or out of) that worker VM instead: how a resized worker\'s new segment reaches its running VM'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "qemu-args" -d 'Print the QEMU arguments (-chardev, -device) that connect VM to a served topology, one device per line, at fixed PCI addresses'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "libvirt-xml" -d 'Print the libvirt elements that connect VM to a served topology: <controller>s and <shmem>s for <devices>, then a <qemu:override> for <domain> (the bridges\' window that makes the shared memory write-back)'
complete -c sivshm-host -n "__fish_sivshm_host_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand check-topology" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand serve" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand status" -l device -d 'Only the line of this device (VM.PEER, as in serve\'s log: mgr.w0, w0.mgr)' -r
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand status" -l worker -d 'Only the line of this worker (its segment and doorbells, and where they came from)' -r
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand status" -l get -d 'Only this key\'s value (of the line --device or --worker selects, else of serve\'s)' -r
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand status" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand hotplug" -l worker -d 'The worker whose channel is plugged or unplugged' -r
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand hotplug" -l into -d 'The running worker VM to plug the worker\'s own device into (default: the manager gets the manager\'s device for the worker)' -r
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand hotplug" -l qmp -d 'The QEMU\'s QMP socket (default: the file\'s [manager] qmp; needed with --into)' -r -F
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand hotplug" -l timeout-s -d 'How long remove waits for the guest to release the device' -r
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand hotplug" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand qemu-args" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand libvirt-xml" -l part -d 'Only this part, without its comment line: the elements for <devices>, or the <qemu:override> for <domain> (for scripts that put each in place)' -r -f -a "devices\t''
domain\t''"
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand libvirt-xml" -s h -l help -d 'Print help'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "check-topology" -d 'Check a topology file (the TOML file `serve` reads) and print every VM\'s devices'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "serve" -d 'Serve a topology file to the user\'s own VMs: every segment and eventfd made once, one unix socket per VM device, each QEMU that connects gets its device\'s setup at once. SIGHUP reloads the file: new workers are added, removed ones retired, the others untouched (a file that would change what running VMs have is refused, nothing changed). Runs until SIGTERM or SIGINT, then removes the sockets'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "status" -d 'Print what the running serve of a topology file reports, as key=value words: its own line (topology, pid, workers, reloads), one line per worker (where its segment and doorbells came from) and one per device (clients connected now, setups sent). Fails while no serve runs or before it is ready, so that a script can wait on it'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "hotplug" -d 'Plug a worker\'s channel into the running manager QEMU (add), or unplug it (remove), over the manager\'s QMP socket: the device qemu-args gives the manager for that worker. Add after serve has the worker (its file reloaded); remove before reloading without it. With --into VM, the worker\'s own device goes into (or out of) that worker VM instead: how a resized worker\'s new segment reaches its running VM'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "qemu-args" -d 'Print the QEMU arguments (-chardev, -device) that connect VM to a served topology, one device per line, at fixed PCI addresses'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "libvirt-xml" -d 'Print the libvirt elements that connect VM to a served topology: <controller>s and <shmem>s for <devices>, then a <qemu:override> for <domain> (the bridges\' window that makes the shared memory write-back)'
complete -c sivshm-host -n "__fish_sivshm_host_using_subcommand help; and not __fish_seen_subcommand_from check-topology serve status hotplug qemu-args libvirt-xml help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
