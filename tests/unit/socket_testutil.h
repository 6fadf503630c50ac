/*
 * socket_testutil.h — the blocking loopback client every socket test
 * starts from.
 *
 * Send and receive time out, so a reply that never comes fails the test
 * instead of hanging it; TCP_NODELAY is on, so a test's small writes reach
 * the server as it wrote them, not when Nagle lets them go.
 */
#ifndef IOTHUBD_TESTS_SOCKET_TESTUTIL_H
#define IOTHUBD_TESTS_SOCKET_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>

/* A socket connected to 127.0.0.1:port whose reads and writes fail after
 * timeout_s seconds. rcvbuf: the receive buffer's size, set before the
 * connect so that the window it advertises follows (0: the default). */
static inline int loopback_connect(int port, int timeout_s, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

#endif
