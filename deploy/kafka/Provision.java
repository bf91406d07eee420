// Provisions Kafka principals in one JVM start: SCRAM credentials and ACL bindings, idempotent.
//
//   java -cp '<kafka libs>/*' deploy/kafka/Provision.java < plan
//
// The plan comes on stdin (never argv: it holds passwords), one directive a line:
//   config <admin client property>=<value>      e.g. bootstrap.servers=…, sasl.jaas.config=…
//   user <name> <password>                      upsert SCRAM-SHA-512 credentials
//   acl <principal> <TOPIC|GROUP|TRANSACTIONAL_ID|CLUSTER> <LITERAL|PREFIXED> <name> <OPERATION>
// Bindings of a planned principal that the plan no longer lists are deleted, so the broker's
// table is exactly the plan's for those principals. Prints one summary line, no secrets.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Provision {
    private static final int ITERATIONS = 8192;
    private static final long TIMEOUT_S = 60;

    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        List<UserScramCredentialAlteration> users = new ArrayList<>();
        Set<AclBinding> bindings = new HashSet<>();
        Set<String> principals = new HashSet<>();
        BufferedReader in =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        int lineNo = 0;
        for (String line; (line = in.readLine()) != null; ) {
            lineNo++;
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) continue;
            String[] f = line.split(" ", 2);
            switch (f[0]) {
                case "config" -> {
                    int eq = f[1].indexOf('=');
                    if (eq < 1) throw new IllegalArgumentException("line " + lineNo + ": config needs key=value");
                    config.put(f[1].substring(0, eq), f[1].substring(eq + 1));
                }
                case "user" -> {
                    String[] u = f[1].split(" ");
                    if (u.length != 2) throw new IllegalArgumentException("line " + lineNo + ": user <name> <password>");
                    users.add(new UserScramCredentialUpsertion(
                            u[0], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS), u[1]));
                }
                case "acl" -> {
                    String[] a = f[1].split(" ");
                    if (a.length != 5) throw new IllegalArgumentException(
                            "line " + lineNo + ": acl <principal> <resource type> <pattern type> <name> <operation>");
                    String principal = "User:" + a[0];
                    principals.add(principal);
                    bindings.add(new AclBinding(
                            new ResourcePattern(ResourceType.valueOf(a[1]), a[3], PatternType.valueOf(a[2])),
                            new AccessControlEntry(principal, "*", AclOperation.valueOf(a[4]), AclPermissionType.ALLOW)));
                }
                default -> throw new IllegalArgumentException("line " + lineNo + ": unknown directive " + f[0]);
            }
        }
        config.putIfAbsent("request.timeout.ms", "20000");
        config.putIfAbsent("default.api.timeout.ms", "55000");
        try (Admin admin = Admin.create(config)) {
            if (!users.isEmpty()) {
                admin.alterUserScramCredentials(users).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            }
            List<AclBinding> stale = new ArrayList<>();
            for (AclBinding existing : admin.describeAcls(AclBindingFilter.ANY).values().get(TIMEOUT_S, TimeUnit.SECONDS)) {
                if (principals.contains(existing.entry().principal()) && !bindings.contains(existing)) {
                    stale.add(existing);
                }
            }
            if (!stale.isEmpty()) {
                List<AclBindingFilter> filters = new ArrayList<>();
                for (AclBinding b : stale) filters.add(b.toFilter());
                admin.deleteAcls(filters).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            }
            if (!bindings.isEmpty()) {
                admin.createAcls(bindings).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            }
            System.out.println("provisioned " + users.size() + " users, " + bindings.size()
                    + " ACL bindings for " + principals.size() + " principals, removed " + stale.size()
                    + " stale bindings");
        }
    }
}
