<?php
// PHP PDO (pdo_pgsql, Debian php-pgsql) through sluice in transaction pooling
// (test/integration/test_ps_drivers.py). With emulated prepares off, PDO prepares every
// statement on the server under its own name (pdo_stmt_<n>: Parse + Sync), runs it with
// Bind + Execute + Sync, and sends `DEALLOCATE pdo_stmt_<n>` as a simple Query when the
// statement object goes away (PgBouncer issue #991: 26000 there, the server knows another
// name).
//
// usage: php pdo_test.php PORT WORKER ROUNDS
// prints one JSON line {"queries": N, "transactions": M} and exits 0, or exits 1 with the
// error.
function check($what, $got, $want) {
    if ($got !== $want) {
        throw new Exception("$what: got " . var_export($got, true) . ", want " . var_export($want, true));
    }
}

[$_, $port, $w, $rounds] = $argv;
$w = (int)$w;
try {
    $pdo = new PDO("pgsql:host=127.0.0.1;port=$port;dbname=appdb", 'md5user', 'md5pass', [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,
    ]);
    $queries = 0;
    $transactions = 0;
    for ($r = 0; $r < (int)$rounds; $r++) {
        // A statement prepared, run twice and dropped (DEALLOCATE) in autocommit.
        $add = $pdo->prepare('SELECT CAST(? AS int) + CAST(? AS int) AS php_add');
        foreach ([1, 2] as $k) {
            $add->execute([$r, $w * $k]);
            check('add', (int)$add->fetchColumn(), $r + $w * $k);
        }
        $add = null;
        $queries += 2;

        // The same text prepared again at once (a new name, the same statement).
        $again = $pdo->prepare('SELECT CAST(? AS int) + CAST(? AS int) AS php_add');
        $again->execute([$r, 1]);
        check('again', (int)$again->fetchColumn(), $r + 1);
        $queries++;

        // A transaction with statements prepared inside it, committed.
        $pdo->beginTransaction();
        $cat = $pdo->prepare("SELECT CAST(? AS text) || '-' || CAST(? AS text) AS php_cat");
        $cat->execute(["w$w", (string)($r % 3)]);
        check('cat', $cat->fetchColumn(), "w$w-" . ($r % 3));
        $pid1 = $pdo->query('SELECT pg_backend_pid()')->fetchColumn();
        $cat->execute(["x", "y"]);
        check('cat 2', $cat->fetchColumn(), 'x-y');
        $pid2 = $pdo->query('SELECT pg_backend_pid()')->fetchColumn();
        check('one server per transaction', $pid1, $pid2);
        $pdo->commit();
        $cat = null;
        $queries += 4;
        $transactions++;

        // A failing statement rolls the transaction back; the statement is dropped after.
        $pdo->beginTransaction();
        $div = $pdo->prepare('SELECT 1 / CAST(? AS int) AS php_div');
        $failed = false;
        try {
            $div->execute([0]);
        } catch (PDOException $e) {
            check('sqlstate', $e->getCode(), '22012');
            $failed = true;
        }
        check('division by zero raised', $failed, true);
        $pdo->rollBack();
        $div = null;
        $queries++;
        $transactions++;

        // The connection is clean afterwards.
        $ok = $pdo->prepare('SELECT CAST(? AS int) * 2 AS php_dbl');
        $ok->execute([$r]);
        check('after rollback', (int)$ok->fetchColumn(), 2 * $r);
        $again = null;
        $ok = null;
        $queries++;
    }
    echo json_encode(['queries' => $queries, 'transactions' => $transactions]), "\n";
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . "\n");
    exit(1);
}
