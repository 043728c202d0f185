// The only native code in portlb: a raw netlink socket. Node cannot open AF_NETLINK,
// so this exposes open/send/recv/close and nothing else; every message is encoded and
// decoded in TypeScript (lb-agent/src/netlink/). Built against Node-API only, so one
// build loads in every Node version that has the same Node-API level.
#define NAPI_VERSION 8
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <node_api.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECV_BUF_SIZE (1 << 20)

static napi_value throw_errno(napi_env env, const char *syscall, int err) {
  napi_value msg, code, error, errnum, sys;
  char text[160];
  snprintf(text, sizeof text, "%s: %s", syscall, strerror(err));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, "ENETLINKSYS", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_throw(env, error);
  return NULL;
}

static int get_int_arg(napi_env env, napi_callback_info info, size_t want, napi_value *argv, int32_t *out) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "missing argument");
    return -1;
  }
  if (napi_get_value_int32(env, argv[0], out) != napi_ok) {
    napi_throw_type_error(env, NULL, "first argument must be a number");
    return -1;
  }
  return 0;
}

// open(protocol, rcvbufBytes) -> { fd, portId }
static napi_value nl_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  int32_t protocol, rcvbuf;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &protocol) != napi_ok ||
      napi_get_value_int32(env, argv[1], &rcvbuf) != napi_ok) {
    napi_throw_type_error(env, NULL, "open(protocol, rcvbuf) expects two numbers");
    return NULL;
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (fd < 0) return throw_errno(env, "socket", errno);
  // A large receive buffer keeps batched ACKs and dumps from being dropped (ENOBUFS).
  // SO_RCVBUFFORCE needs CAP_NET_ADMIN, which the agent has; fall back otherwise.
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  // Extended acks carry the kernel's error text where a subsystem provides one.
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind", err);
  }
  socklen_t len = sizeof addr;
  if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "getsockname", err);
  }
  napi_value result, vfd, vport;
  napi_create_object(env, &result);
  napi_create_int32(env, fd, &vfd);
  napi_create_uint32(env, addr.nl_pid, &vport);
  napi_set_named_property(env, result, "fd", vfd);
  napi_set_named_property(env, result, "portId", vport);
  return result;
}

// send(fd, buffer) -> bytes sent. The kernel processes netlink requests synchronously
// inside sendmsg, so the replies are queued by the time this returns.
static napi_value nl_send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  if (get_int_arg(env, info, 2, argv, &fd) < 0) return NULL;
  void *data;
  size_t length;
  if (napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "second argument must be a Buffer");
    return NULL;
  }
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;
  do {
    n = sendto(fd, data, length, 0, (struct sockaddr *)&kernel, sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "sendto", errno);
  napi_value result;
  napi_create_int64(env, n, &result);
  return result;
}

// recv(fd, timeoutMs) -> Buffer with the datagrams queued, up to RECV_SLOTS (at least one,
// each padded to 4 bytes, so the messages simply follow each other), or null on timeout.
// The kernel has usually queued the answer already (requests run inside sendmsg), so read
// without blocking first and poll only when nothing is there. One recvmmsg takes a dump's
// last replies and its NLMSG_DONE together: reading a datagram of a dump makes the kernel
// queue the next one inside that same read. In UML every system call is a round trip
// through the host (about 50-70 us): a 10,000-service read-back is 10,000 dumps, and this is
// one call fewer per dump. Two slots are enough for that; more would also make a long dump
// come in larger steps, and the agent yields to its event loop between receives.
#define RECV_SLOTS 2
static napi_value nl_recv(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, timeout;
  if (get_int_arg(env, info, 2, argv, &fd) < 0) return NULL;
  if (napi_get_value_int32(env, argv[1], &timeout) != napi_ok) {
    napi_throw_type_error(env, NULL, "timeout must be a number");
    return NULL;
  }
  // Node-API calls arrive on the JS thread only, so static buffers are safe. Pages never
  // written are never resident: a slot costs memory only for the datagrams it held.
  static char bufs[RECV_SLOTS][RECV_BUF_SIZE];
  static char joined[RECV_SLOTS * RECV_BUF_SIZE];
  struct mmsghdr msgs[RECV_SLOTS];
  struct iovec iov[RECV_SLOTS];
  for (int i = 0; i < RECV_SLOTS; i++) {
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = RECV_BUF_SIZE;
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  napi_value result;
  int got;
  for (;;) {
    got = recvmmsg(fd, msgs, RECV_SLOTS, MSG_DONTWAIT, NULL);
    if (got > 0) break;
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return throw_errno(env, "recvmmsg", errno);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int ready;
    do {
      ready = poll(&pfd, 1, timeout);
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) return throw_errno(env, "poll", errno);
    if (ready == 0) {
      napi_get_null(env, &result);
      return result;
    }
  }
  void *out;
  if (got == 1 && !(msgs[0].msg_hdr.msg_flags & MSG_TRUNC)) {
    napi_create_buffer_copy(env, msgs[0].msg_len, bufs[0], &out, &result);
    return result;
  }
  size_t total = 0;
  for (int i = 0; i < got; i++) {
    // A datagram larger than its slot lost its tail: say so rather than decode half of it.
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) return throw_errno(env, "recvmmsg (datagram truncated)", EMSGSIZE);
    size_t n = msgs[i].msg_len;
    memcpy(joined + total, bufs[i], n);
    total += n;
    while (total % 4) joined[total++] = 0;
  }
  napi_create_buffer_copy(env, total, joined, &out, &result);
  return result;
}

static napi_value nl_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_int_arg(env, info, 1, argv, &fd) < 0) return NULL;
  if (close(fd) < 0) return throw_errno(env, "close", errno);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, nl_open, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, nl_send, NULL, NULL, NULL, napi_default, NULL},
      {"recv", NULL, nl_recv, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, nl_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
