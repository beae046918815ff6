// Plain OS threads for relay loops and the admin socket. A relay loop must be a real
// thread of its own (it may enter a pod's network namespace with setns, which applies to
// the calling thread only), so Swift concurrency's shared pool is not an option there.
import CLoomLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A joinable pthread running one closure.
public final class SystemThread: @unchecked Sendable {
    // @unchecked: `handle` is written once by `spawn` before any other thread sees the
    // object and read only by `join`.
    private var handle = pthread_t()
    private let body: @Sendable () -> Void
    private let name: String

    private init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }

    /// Starts `body` on a new thread named `name` (at most 15 characters are kept).
    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) -> SystemThread {
        let thread = SystemThread(name: name, body: body)
        let context = Unmanaged.passRetained(thread).toOpaque()
        let rc = pthread_create(
            &thread.handle,
            nil,
            { raw in
                // Safe: `raw` is the retained SystemThread passed below; balanced here.
                let thread = Unmanaged<SystemThread>.fromOpaque(raw!).takeRetainedValue()
                _ = cloom_set_thread_name(String(thread.name.prefix(15)))
                thread.body()
                return nil
            },
            context
        )
        if rc != 0 {
            Unmanaged<SystemThread>.fromOpaque(context).release()
            throw SystemError("pthread_create", errno: rc)
        }
        return thread
    }

    /// Waits for the thread to end.
    public func join() {
        _ = pthread_join(handle, nil)
    }
}
