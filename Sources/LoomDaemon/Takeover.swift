// Hitless upgrade: a new loomd started with `--takeover` asks the running one, over
// `<state-dir>/upgrade.sock` (SOCK_SEQPACKET, 0600), for its listening sockets and its
// state-directory lock (SCM_RIGHTS). The kernel's listening sockets never close, so
// connections keep being accepted throughout; the old loomd stops accepting only after
// the new one has adopted them, relays what it has in flight until it ends (or the drain
// timeout), and exits. Tables are never removed or rebuilt from scratch: the new loomd
// re-applies each pod's table in one atomic replace with the same rules.
//
//   new -> old  {"takeover": PID}
//   old -> new  {"pod": {"netns": PATH, "listeners": [{port, family, kind}, ...]}}  + fds  (one per ≤64 fds)
//   old -> new  {"end": true}                                                  + the lock's fd
//   new -> old  {"adopted": N}
import Foundation
import Logging
import LoomRelay
import LoomSystem

struct TakeoverMessage: Codable {
    struct Listener: Codable {
        var port: UInt16
        var family: Int32
        var kind: String
    }
    struct Pod: Codable {
        var netns: String
        var listeners: [Listener]
    }
    var takeover: Int?
    var pod: Pod?
    var end: Bool?
    var adopted: Int?
    var error: String?

    func json() -> String {
        String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self)
    }

    static func parse(_ text: String) -> TakeoverMessage? {
        try? JSONDecoder().decode(TakeoverMessage.self, from: Data(text.utf8))
    }
}

/// The takeover could not happen; the running loomd keeps running.
public struct TakeoverError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "takeover failed: \(message)" }
}

/// What the new loomd received.
struct HandOff {
    let socket: PacketSocket
    let lock: FileDescriptor
    let pods: [String: [HandedListener]]

    /// Asks the loomd serving `path` to hand over. Blocks until it has sent everything.
    static func request(path: String, logger: Logger) throws(TakeoverError) -> HandOff {
        let socket: PacketSocket
        do {
            socket = try PacketSocket.connect(path: path)
        } catch {
            throw TakeoverError(
                message:
                    "the running loomd does not answer on \(path) (\(error)); is it a loomd older than --takeover, or started with another --state-dir?"
            )
        }
        var pods: [String: [HandedListener]] = [:]
        var lock: FileDescriptor?
        func fail(_ message: String) -> TakeoverError {
            for listener in pods.values.joined() { listener.fd.close() }
            lock?.close()
            socket.close()
            return TakeoverError(message: message)
        }
        do {
            try socket.send(TakeoverMessage(takeover: Int(SystemProcess.id)).json())
            while true {
                guard let (text, fds) = try socket.receive(timeoutMs: 30_000) else {
                    throw fail("the running loomd closed the hand-over before it ended")
                }
                guard let message = TakeoverMessage.parse(text) else {
                    for fd in fds { fd.close() }
                    throw fail("unreadable hand-over message: \(text)")
                }
                if let error = message.error {
                    for fd in fds { fd.close() }
                    throw fail("the running loomd refused: \(error)")
                }
                if let pod = message.pod {
                    guard pod.listeners.count == fds.count else {
                        for fd in fds { fd.close() }
                        throw fail(
                            "pod \(pod.netns): \(pod.listeners.count) listeners announced, \(fds.count) received"
                        )
                    }
                    for (listener, fd) in zip(pod.listeners, fds) {
                        pods[pod.netns, default: []].append(
                            HandedListener(
                                fd: fd,
                                family: listener.family,
                                port: listener.port,
                                kind: CaptureKind(rawValue: listener.kind) ?? .outbound
                            )
                        )
                    }
                } else if message.end == true {
                    guard fds.count == 1 else {
                        for fd in fds { fd.close() }
                        throw fail("the hand-over ended without the state directory's lock")
                    }
                    lock = fds[0]
                    break
                } else {
                    for fd in fds { fd.close() }
                }
            }
        } catch let error as TakeoverError {
            throw error
        } catch {
            throw fail("\(error)")
        }
        let count = pods.values.reduce(0) { $0 + $1.count }
        logger.notice("takeover: received \(count) listener(s) of \(pods.count) pod(s) and the state lock")
        return HandOff(socket: socket, lock: lock!, pods: pods)
    }

    /// Gives everything back: the old loomd, told nothing, carries on.
    func abandon() {
        for listener in pods.values.joined() { listener.fd.close() }
        lock.close()
        socket.close()
    }

    /// Tells the old loomd it may stop accepting.
    func acknowledge(adopted: Int) {
        try? socket.send(TakeoverMessage(adopted: adopted).json())
        socket.close()
    }
}
