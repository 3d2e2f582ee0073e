"""Every op of PROTOCOL.md over TCP and UDP."""
import jqtest


class Ping(jqtest.TestCase):
    def test_ping_tcp_and_udp(self):
        with jqtest.Daemon() as d:
            self.assertOk(d.request({"op": "ping"}))
            self.assertEqual(d.udp().request({"op": "ping"})["protocol"], 1)


if __name__ == "__main__":
    jqtest.main()
