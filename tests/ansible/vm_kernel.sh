# Runs as the IPVS VM's one command (tests/ansible/test_kernel_vm.py): roles/lb_kernel on
# the guest itself, then independent looks at what it did.
mkdir -p /dev/shm && mount -t tmpfs -o size=64m shm /dev/shm # ansible's multiprocessing
export ANSIBLE_ROLES_PATH=$PWD/roles ANSIBLE_CONFIG=$PWD/ansible.cfg ANSIBLE_NOCOLOR=1 \
  ANSIBLE_HOME=/tmp/ansible-home ANSIBLE_LOCAL_TEMP=/tmp/ansible-local
start=$(date +%s)
.venv/bin/ansible-playbook -i localhost, -e ansible_python_interpreter=/usr/bin/python3 \
  tests/ansible/playbooks/kernel_vm.yml
echo "playbook-rc=$? seconds=$(($(date +%s) - start))"
echo "== /proc/modules"
cut -d' ' -f1 /proc/modules | sort
echo "== sysctl"
sysctl net.ipv4.vs.conntrack net.ipv4.vs.expire_nodest_conn net.ipv4.vs.expire_quiescent_template \
  net.ipv4.vs.conn_reuse_mode net.ipv4.ip_forward net.ipv6.conf.all.forwarding \
  net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce net.ipv4.ip_nonlocal_bind
echo "== ipvsadm"
ipvsadm -Ln
echo "== files"
cat /etc/modules-load.d/appliance-lb.conf /etc/sysctl.d/60-appliance-lb.conf
