{
  "targets": [
    {
      "target_name": "portlb_netlink",
      "sources": ["netlink.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
