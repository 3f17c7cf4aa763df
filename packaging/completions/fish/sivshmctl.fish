# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sivshmctl_global_optspecs
    string join \n h/help V/version
end

function __fish_sivshmctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sivshmctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sivshmctl_using_subcommand
    set -l cmd (__fish_sivshmctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -s h -l help -d 'Print help'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -s V -l version -d 'Print version'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -f -a "list" -d 'Every device, one per line: node, PCI address, size, peer id, vectors, memory type'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -f -a "info" -d 'One device, one key=value per line'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -f -a "ring" -d 'Ring VECTOR of peer PEER through DEV\'s doorbell'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -f -a "wait" -d 'Wait for an interrupt on VECTOR (default 0) of DEV; prints how many came. Only interrupts after the wait began count'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -f -a "dump" -d 'Print LEN bytes of DEV\'s shared memory from OFFSET in hex (decimal or 0x... numbers)'
complete -c sivshmctl -n "__fish_sivshmctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand list" -l json -d 'As one JSON array of the objects `info --json` prints (schema "sivshmctl/1")'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand list" -s h -l help -d 'Print help'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand info" -l udev -d 'As udev properties (SIVSHM_PCI=0000:00:04.0, ...) for a rule\'s IMPORT{program}'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand info" -l json -d 'As one JSON object (schema "sivshmctl/1": schema, node, index, pci, size, doorbell, peer, vectors, memtype)'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand info" -s h -l help -d 'Print help'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand ring" -s h -l help -d 'Print help'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand wait" -l timeout -d 'Give up after this many seconds (fractions allowed); exit code 1 then' -r
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand wait" -s h -l help -d 'Print help'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand dump" -s h -l help -d 'Print help'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand help; and not __fish_seen_subcommand_from list info ring wait dump help" -f -a "list" -d 'Every device, one per line: node, PCI address, size, peer id, vectors, memory type'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand help; and not __fish_seen_subcommand_from list info ring wait dump help" -f -a "info" -d 'One device, one key=value per line'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand help; and not __fish_seen_subcommand_from list info ring wait dump help" -f -a "ring" -d 'Ring VECTOR of peer PEER through DEV\'s doorbell'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand help; and not __fish_seen_subcommand_from list info ring wait dump help" -f -a "wait" -d 'Wait for an interrupt on VECTOR (default 0) of DEV; prints how many came. Only interrupts after the wait began count'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand help; and not __fish_seen_subcommand_from list info ring wait dump help" -f -a "dump" -d 'Print LEN bytes of DEV\'s shared memory from OFFSET in hex (decimal or 0x... numbers)'
complete -c sivshmctl -n "__fish_sivshmctl_using_subcommand help; and not __fish_seen_subcommand_from list info ring wait dump help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
