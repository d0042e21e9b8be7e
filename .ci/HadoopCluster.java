// A Hadoop cluster on 127.0.0.1 from Apache Hadoop's own classes: HDFS (1 NameNode, 2 DataNodes,
// replication 2) and YARN (1 ResourceManager, 2 NodeManagers), for dltool's tests and for trying
// dltool on HDFS and YARN. Started by `.ci/hadoop start`; run with `java -cp JARS HadoopCluster.java DIR`.
//
// It writes DIR/conf/{core,hdfs,yarn}-site.xml (a client's HADOOP_CONF_DIR), then DIR/ready.
// Control: a file DIR/control/stop-datanode-N stops DataNode N (a fault for the tests); DIR/control/stop
// stops the cluster. Every port is ephemeral and every folder lives under DIR, so runs never collide.

import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

public class HadoopCluster {
    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            e.printStackTrace();
            System.exit(1);  // HDFS's threads would keep a half-started cluster alive
        }
    }

    static void writeSite(File file, String[][] properties) throws Exception {
        Configuration site = new Configuration(false);
        for (String[] property : properties) site.set(property[0], property[1]);
        File tmp = new File(file.getPath() + ".tmp");
        try (OutputStream out = new FileOutputStream(tmp)) {
            site.writeXml(out);
        }
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.ATOMIC_MOVE);
    }

    static void run(String[] args) throws Exception {
        File dir = new File(args[0]).getAbsoluteFile();
        int nodeMemoryMb = Integer.parseInt(System.getenv().getOrDefault("DLTOOL_HADOOP_NODE_MB", "6144"));
        int nodeVcores = Integer.parseInt(System.getenv().getOrDefault("DLTOOL_HADOOP_NODE_VCORES", "4"));
        System.setProperty("test.build.data", new File(dir, "yarn").getPath());
        System.setProperty("hadoop.log.dir", new File(dir, "logs").getPath());
        File control = new File(dir, "control");
        control.mkdirs();

        Configuration conf = new Configuration();
        conf.set("hdfs.minidfs.basedir", new File(dir, "hdfs").getPath());
        conf.set("hadoop.tmp.dir", new File(dir, "tmp").getPath());
        conf.setInt("dfs.replication", 2);
        conf.set("dfs.namenode.http-address", "127.0.0.1:0");
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.setBoolean("dfs.permissions.enabled", true);
        conf.setInt("dfs.namenode.heartbeat.recheck-interval", 5000);  // a dead DataNode is seen in seconds
        conf.setInt("dfs.heartbeat.interval", 1);
        MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf)
            .numDataNodes(2).nameNodePort(0).nameNodeHttpPort(0).format(true).build();
        dfs.waitActive();
        Configuration clientConf = dfs.getConfiguration(0);
        String defaultFs = "hdfs://127.0.0.1:" + dfs.getNameNodePort();
        clientConf.set("fs.defaultFS", defaultFs);
        // Spark's staging folders and YARN's logs live in /user and /tmp, as on a real cluster.
        org.apache.hadoop.fs.FileSystem hdfs = dfs.getFileSystem();
        hdfs.mkdirs(new org.apache.hadoop.fs.Path("/tmp"));
        hdfs.setPermission(new org.apache.hadoop.fs.Path("/tmp"), new org.apache.hadoop.fs.permission.FsPermission((short) 01777));
        hdfs.mkdirs(new org.apache.hadoop.fs.Path("/user/" + System.getProperty("user.name")));

        YarnConfiguration yconf = new YarnConfiguration(clientConf);
        yconf.set("fs.defaultFS", defaultFs);
        yconf.set("yarn.resourcemanager.hostname", "127.0.0.1");
        yconf.set("yarn.nodemanager.hostname", "127.0.0.1");
        yconf.setInt("yarn.nodemanager.resource.memory-mb", nodeMemoryMb);
        yconf.setInt("yarn.nodemanager.resource.cpu-vcores", nodeVcores);
        yconf.setInt("yarn.scheduler.minimum-allocation-mb", 256);
        yconf.setInt("yarn.scheduler.maximum-allocation-mb", nodeMemoryMb);
        yconf.setInt("yarn.scheduler.maximum-allocation-vcores", nodeVcores);
        // Virtual memory is not what a TensorFlow process costs (it maps far more than it uses).
        yconf.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
        yconf.setBoolean("yarn.nodemanager.pmem-check-enabled", true);
        yconf.set("yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", "99.5");
        yconf.setBoolean("yarn.minicluster.fixed.ports", false);
        yconf.set("yarn.scheduler.capacity.root.queues", "default");
        yconf.set("yarn.scheduler.capacity.root.default.capacity", "100");
        yconf.set("yarn.scheduler.capacity.root.default.maximum-capacity", "100");
        yconf.set("yarn.scheduler.capacity.maximum-am-resource-percent", "0.5");
        // One container per node heartbeat: an application's executors spread over both NodeManagers,
        // as on a real cluster, instead of filling the first node that reports.
        yconf.setBoolean("yarn.scheduler.capacity.per-node-heartbeat.multiple-assignments-enabled", false);
        // ... and a heartbeat every 250 ms instead of 1 s: an application's containers come in a second, not four.
        yconf.setLong("yarn.resourcemanager.nodemanagers.heartbeat-interval-ms", 250);
        yconf.set("yarn.nodemanager.env-whitelist",
            "JAVA_HOME,HADOOP_COMMON_HOME,HADOOP_HDFS_HOME,HADOOP_CONF_DIR,CLASSPATH_PREPEND_DISTCACHE,HADOOP_YARN_HOME,HADOOP_HOME,PATH,LANG,TZ");
        MiniYARNCluster yarn = new MiniYARNCluster("dltool", 2, 1, 1);
        yarn.init(yconf);
        yarn.start();
        Configuration all = yarn.getConfig();
        // Wait until both NodeManagers have registered, so the first application gets its containers.
        long deadline = System.currentTimeMillis() + 60_000;
        while (yarn.getResourceManager().getRMContext().getRMNodes().size() < 2) {
            if (System.currentTimeMillis() > deadline) throw new IllegalStateException("NodeManagers did not register in 60 s");
            Thread.sleep(100);
        }

        // A client's configuration, as a cluster's gateway node would have it (not the servers' own,
        // which name test-only classes such as StaticMapping).
        String nnHttp = "127.0.0.1:" + dfs.getNameNode().getHttpAddress().getPort();
        File confDir = new File(dir, "conf");
        confDir.mkdirs();
        writeSite(new File(confDir, "core-site.xml"), new String[][] {{"fs.defaultFS", defaultFs}});
        writeSite(new File(confDir, "hdfs-site.xml"), new String[][] {
            {"dfs.replication", "2"}, {"dfs.namenode.http-address", nnHttp}, {"dfs.webhdfs.enabled", "true"}});
        String[] yarnKeys = {"yarn.resourcemanager.address", "yarn.resourcemanager.scheduler.address",
            "yarn.resourcemanager.resource-tracker.address", "yarn.resourcemanager.admin.address",
            "yarn.resourcemanager.webapp.address", "yarn.scheduler.minimum-allocation-mb",
            "yarn.scheduler.maximum-allocation-mb", "yarn.scheduler.maximum-allocation-vcores",
            "yarn.nodemanager.resource.memory-mb", "yarn.nodemanager.resource.cpu-vcores",
            "yarn.nodemanager.vmem-check-enabled", "yarn.nodemanager.pmem-check-enabled"};
        String[][] yarnSite = new String[yarnKeys.length][];
        for (int i = 0; i < yarnKeys.length; i++) yarnSite[i] = new String[] {yarnKeys[i], all.get(yarnKeys[i])};
        writeSite(new File(confDir, "yarn-site.xml"), yarnSite);
        String ready = "fs.defaultFS=" + defaultFs + "\n"
            + "webhdfs=http://" + nnHttp + "\n"
            + "yarn.resourcemanager.address=" + all.get("yarn.resourcemanager.address") + "\n"
            + "yarn.resourcemanager.webapp.address=" + all.get("yarn.resourcemanager.webapp.address") + "\n"
            + "pid=" + ProcessHandle.current().pid() + "\n";
        Files.writeString(new File(dir, "ready.tmp").toPath(), ready);
        Files.move(new File(dir, "ready.tmp").toPath(), new File(dir, "ready").toPath(), StandardCopyOption.ATOMIC_MOVE);
        System.out.println("ready " + defaultFs);
        System.out.flush();

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try { yarn.stop(); } catch (Exception e) { /* stopping anyway */ }
            try { dfs.shutdown(); } catch (Exception e) { /* stopping anyway */ }
        }));
        while (true) {
            File[] requests = control.listFiles();
            if (requests != null) {
                for (File request : requests) {
                    String name = request.getName();
                    request.delete();
                    if (name.equals("stop")) {
                        System.exit(0);
                    } else if (name.startsWith("stop-datanode-")) {
                        int index = Integer.parseInt(name.substring("stop-datanode-".length()));
                        dfs.stopDataNode(index);
                        Files.writeString(new File(dir, "stopped-datanode-" + index).toPath(), "stopped\n");
                    }
                }
            }
            Thread.sleep(200);
        }
    }
}
